"""Guardrail classifier inference: load a checkpoint (or an untrained backbone) and score texts.

Checkpoint layout (written by `guardray.trainer`): a Hugging Face `AutoModelForSequenceClassification` folder
(safetensors) with 16 sigmoid outputs - output 0 is the binary **unsafe** head, outputs 1..15 the multi-label
**category** head (taxonomy codes, `LABEL_NAMES`) - plus `guardray.json` holding the calibrated threshold and
validation metrics. One linear layer carries both heads, so plain
`transformers.pipeline("text-classification", model=PATH, top_k=None)` loads it and returns all 16 scores.

Scoring sorts texts by length and pads per batch (length bucketing). Long texts: a checkpoint records how its
threshold was calibrated (`guardray.json` "scoring") and is scored the same way - `head_tail` (current trainer): a
text up to `scoring.max_length` tokens (512) in one pass, a longer one as its first quarter + last three quarters
of that budget, exactly the trainer's validation inputs; `windows_max` (checkpoints without "scoring"): overlapping
windows of the training length (tokenizer overflow with stride), max over windows. On the demo's validation split
the max over 128-token windows flagged 17% of the long benign texts against 0% for one 512-token pass, at equal
recall (benchmarks/long_text.md): the max of many noisy window scores inflates the false positives.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardray.core.taxonomy import CATEGORY_CODES

LABEL_NAMES: tuple[str, ...] = ("unsafe",) + CATEGORY_CODES
META_FILE = "guardray.json"


@dataclass
class Scores:
    unsafe: np.ndarray  # [n] probability of unsafe
    categories: np.ndarray  # [n, 15] per-category probabilities (taxonomy order)
    seconds: float = 0.0
    windows: int = 0  # model inputs after splitting long texts


def label_maps():
    id2label = {i: n for i, n in enumerate(LABEL_NAMES)}
    return id2label, {n: i for i, n in id2label.items()}


def load_backbone(path: str, *, dtype=None):
    """`AutoModelForSequenceClassification` with guardray's 16-output head (new head if the folder has none)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    id2label, label2id = label_maps()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kw = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(LABEL_NAMES), id2label=id2label, label2id=label2id,
        problem_type="multi_label_classification", trust_remote_code=False, ignore_mismatched_sizes=True, **kw)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def read_meta(path: str | Path) -> dict:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def head_tail_features(tok, texts: list[str], max_length: int) -> list[dict]:
    """Token features per text; a text longer than `max_length` keeps its first quarter and its last three quarters
    of the budget (head + tail), so harm at the end of a long benign message is in the input."""
    if not texts:
        return []
    enc = tok(list(texts), truncation=False, verbose=False)
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    head = max_length // 4
    out = []
    for i in range(len(texts)):
        f = {k: enc[k][i] for k in keep}
        if len(f["input_ids"]) > max_length:
            f = {k: v[:head] + v[len(v) - (max_length - head):] for k, v in f.items()}
        out.append(f)
    return out


class GuardClassifier:
    """A loaded guardrail. `score(texts)` -> `Scores`; `threshold` is the calibrated decision threshold.

    `long_text`: "head_tail" (one pass of up to `max_length` tokens, head + tail beyond) or "windows_max"
    (windows of `max_length` tokens with `stride` overlap, max over windows); see the module docstring."""

    def __init__(self, model, tokenizer, *, threshold: float = 0.5, name: str = "", meta: dict | None = None,
                 max_length: int = 256, stride: int = 64, device: str = "cpu", long_text: str = "windows_max"):
        if long_text not in ("head_tail", "windows_max"):
            raise ValueError(f"long_text: {long_text!r}; use head_tail or windows_max")
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.threshold = float(threshold)
        self.name = name
        self.meta = meta or {}
        cap = getattr(tokenizer, "model_max_length", None)
        self.max_length = min(max_length, cap) if cap and cap < 1_000_000 else max_length
        self.stride = min(stride, self.max_length // 2)
        self.device = device
        self.long_text = long_text

    @classmethod
    def load(cls, name_or_path: str, *, device: str = "cpu", max_length: int | None = None, stride: int = 64,
             threshold: float | None = None) -> "GuardClassifier":
        from guardray.models import resolve
        path = resolve(name_or_path)
        model, tok = load_backbone(path)
        meta = read_meta(path)
        thr = threshold if threshold is not None else meta.get("threshold", 0.5)
        scoring = meta.get("scoring") or {}
        long_text = scoring.get("long_text", "windows_max")
        ml = max_length or scoring.get("max_length") or meta.get("max_length", 256)
        return cls(model, tok, threshold=thr, name=name_or_path, meta=meta, max_length=ml, stride=stride,
                   device=device, long_text=long_text)

    @property
    def trained(self) -> bool:
        return bool(self.meta)

    def score(self, texts: list[str], batch_size: int = 32, progress: bool = False,
              max_tokens: int | None = None) -> Scores:
        """`max_tokens` also caps a forward pass at rows x longest-row padded tokens (length bucketing for
        serving: one long text does not pad a whole batch of short ones)."""
        import torch
        t0 = time.perf_counter()
        n = len(texts)
        if n == 0:
            return Scores(np.zeros(0), np.zeros((0, len(CATEGORY_CODES))))
        if self.long_text == "head_tail":
            items = head_tail_features(self.tokenizer, list(texts), self.max_length)
            owner = list(range(n))
        else:
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, stride=self.stride,
                                 return_overflowing_tokens=True, padding=False)
            owner = enc.get("overflow_to_sample_mapping", list(range(n)))
            items = [{k: enc[k][i] for k in enc.keys() if k not in ("overflow_to_sample_mapping",)}
                     for i in range(len(owner))]
        for it in items:  # a text with no tokens at all (a tokenizer without special tokens): one pad token
            if not it["input_ids"]:
                it.update({k: [self.tokenizer.pad_token_id if k == "input_ids" else int(k == "attention_mask")]
                           for k in it})
        order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
        probs = np.zeros((len(items), len(LABEL_NAMES)), dtype=np.float32)
        batches, cur = [], []
        for i in order:  # ascending length: the newest item is the longest of its batch
            if cur and (len(cur) >= batch_size
                        or max_tokens and (len(cur) + 1) * len(items[i]["input_ids"]) > max_tokens):
                batches.append(cur)
                cur = []
            cur.append(i)
        batches.append(cur)
        it = batches
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc=f"scoring {n} texts", unit="batch")
        with torch.inference_mode():
            for idx in it:
                batch = self.tokenizer.pad([items[i] for i in idx], return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()
                         if k in ("input_ids", "attention_mask", "token_type_ids")}
                logits = self.model(**batch).logits.float()
                probs[idx] = torch.sigmoid(logits).cpu().numpy()
        out = np.zeros((n, len(LABEL_NAMES)), dtype=np.float32)
        np.maximum.at(out, np.asarray(owner), probs)
        return Scores(out[:, 0], out[:, 1:], time.perf_counter() - t0, len(items))

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        s = self.score(texts, batch_size)
        return [{"label": "unsafe" if u >= self.threshold else "safe", "score": float(u),
                 "categories": {c: float(v) for c, v in zip(CATEGORY_CODES, row)}}
                for u, row in zip(s.unsafe, s.categories)]
