"""Sentence embeddings (mean-pooled, L2-normalised), MiniLM by default: used for near-duplicate removal,
diversity selection, meaning-preservation rewards and the knn baseline."""
from __future__ import annotations

import numpy as np


class Embedder:
    def __init__(self, name: str = "minilm", device: str = "cpu", max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer
        from guardray.models import resolve
        path = resolve(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(path, trust_remote_code=False).eval().to(device)
        self.device, self.max_length = device, max_length

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch
        dim = self.model.config.hidden_size
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                b = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
                h = self.model(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1)
                out[idx] = torch.nn.functional.normalize(v, dim=-1).float().cpu().numpy()
        return out
