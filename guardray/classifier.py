"""Guardrail classifier inference: load a checkpoint (or an untrained backbone) and score texts.

Checkpoint layout (written by `guardray.trainer`): a Hugging Face `AutoModelForSequenceClassification` folder
(safetensors) with 1 + C sigmoid outputs - output 0 is the binary **unsafe** head, outputs 1..C the multi-label
**category** head (the policy's codes in order: `config.id2label`; the built-in policy's 15 by default,
`LABEL_NAMES`) - plus `guardray.json` holding the calibrated threshold and
validation metrics. One linear layer carries both heads. By default the head reads the architecture's own pooler
(`trainer.pooling=cls`), so plain `transformers.pipeline("text-classification", model=PATH, top_k=None)` loads it
and returns all 1 + C scores; a `pooling=mean` checkpoint (recorded in guardray.json "scoring"; `set_pooling`) reads
the mean of the last hidden states and must be loaded with `GuardClassifier.load`.

Inputs are canonicalised first (`guardray.core.normalize`: NFKC, leet digits inside words, letter-spaced words,
look-alike letters of other scripts inside Latin words), so "b0mb" or "k i l l" scores as the plain word; on the
demo checkpoint it cut leetspeak flips of validation seeds from 0.246 to 0.042 (look-alike letters 0.144 -> 0,
spacing 0.095 -> 0.017) and left F1 and AUPRC on the evaluation sets unchanged (benchmarks/robustness.md). `normalize=False` (or guardray.json "scoring.normalize": false) scores raw text.

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
    categories: np.ndarray  # [n, categories] per-category probabilities (the checkpoint's policy order)
    seconds: float = 0.0
    windows: int = 0  # model inputs after splitting long texts


def label_maps(label_names=LABEL_NAMES):
    id2label = {i: n for i, n in enumerate(label_names)}
    return id2label, {n: i for i, n in id2label.items()}


POOLINGS = ("cls", "mean")


def _head(model):
    """(dropout, head) of a sequence classifier: BERT's and MiniLM's `classifier`, GPT-2's `score` (no dropout).
    PEFT may have wrapped the head (modules_to_save), so it is looked up at every call."""
    import torch
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    return getattr(model, "dropout", None) or torch.nn.Identity(), head


def _mean_pooled_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
    """`forward` of a sequence classifier whose head reads the mask-weighted mean of the last hidden states."""
    from transformers.modeling_outputs import SequenceClassifierOutput
    if attention_mask is None:
        import torch
        attention_mask = torch.ones_like(input_ids)
    enc = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        enc["token_type_ids"] = token_type_ids
    h = self.base_model(**enc).last_hidden_state
    m = attention_mask.unsqueeze(-1).float()
    pooled = ((h.float() * m).sum(1) / m.sum(1).clamp(min=1.0)).to(h.dtype)  # summed in fp32 (bf16 weights)
    dropout, head = _head(self)
    return SequenceClassifierOutput(logits=head(dropout(pooled)))


def set_pooling(model, pooling: str):
    """Make the classifier's head read `pooling` of the encoder's last hidden states: "cls" (the architecture's
    own: BERT's pretrained [CLS] pooler, GPT-2's last token) or "mean" (the attention-mask-weighted mean over
    tokens: the sentence embedding all-MiniLM-L6-v2 was trained to produce; a frozen linear probe on the seeds
    separates them at val AUPRC 0.87 against 0.78 for the [CLS] pooler; fine-tuned, the two are within noise:
    benchmarks/pooling.md). "mean" replaces this model object's
    `forward`, so weights, `save_pretrained`, DDP and PEFT are those of the Hugging Face model; the unused [CLS]
    pooler is frozen (DDP would wait for its gradients). The checkpoint records the pooling (guardray.json
    "scoring"), and `GuardClassifier.load` restores it."""
    import types
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: {pooling!r}; use one of {', '.join(POOLINGS)}")
    if pooling == "cls":
        return model
    import torch
    if not isinstance(_head(model)[1], torch.nn.Linear):
        raise ValueError(f"pooling=mean needs a backbone whose classification head is one linear layer (BERT, "
                         f"MiniLM, GPT-2); {type(model).__name__} has another head: use pooling=cls")
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)
    model.forward = types.MethodType(_mean_pooled_forward, model)
    model.guardray_pooling = "mean"
    return model


def load_backbone(path: str, *, dtype=None, pooling: str = "cls", label_names=LABEL_NAMES):
    """`AutoModelForSequenceClassification` with guardray's head (`label_names`: "unsafe" then the policy's
    category codes; a new head if the folder has none), reading `pooling` of the encoder's outputs
    (`set_pooling`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    id2label, label2id = label_maps(tuple(label_names))
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kw = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(id2label), id2label=id2label, label2id=label2id,
        problem_type="multi_label_classification", trust_remote_code=False, ignore_mismatched_sizes=True, **kw)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return set_pooling(model, pooling), tok


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


# forward-pass grouping (GuardClassifier.score): below this many padded tokens a pass is dominated by its fixed cost
# (MiniLM on 2 cores: 16 tokens 11 ms, 128 tokens 31 ms, 8 x 16 tokens 33 ms), so short texts batch whatever their
# padding; above it a pass costs ~0.15 ms per padded token, so padding beyond PAD_WASTE of the real tokens splits it
SMALL_PASS_TOKENS = 512
PAD_WASTE = 0.25


def forward_passes(lengths: list[int], batch_size: int = 32, max_tokens: int | None = None,
                   pad_waste: float | None = PAD_WASTE) -> list[list[int]]:
    """Indices of `lengths` (token counts) grouped into forward passes, ascending length (GuardClassifier.score)."""
    batches, cur, real = [], [], 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):  # the newest item is the longest of its pass
        length = lengths[i]
        padded = (len(cur) + 1) * length
        if cur and (len(cur) >= batch_size or max_tokens and padded > max_tokens
                    or pad_waste is not None and padded > SMALL_PASS_TOKENS
                    and padded > (1 + pad_waste) * (real + length)):
            batches.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += length
    if cur:
        batches.append(cur)
    return batches


class GuardClassifier:
    """A loaded guardrail. `score(texts)` -> `Scores`; `threshold` is the calibrated decision threshold.

    `long_text`: "head_tail" (one pass of up to `max_length` tokens, head + tail beyond) or "windows_max"
    (windows of `max_length` tokens with `stride` overlap, max over windows); see the module docstring.
    `precision`: "auto" | "fp32" | "bf16" (guardray.precision): bf16 casts `model`'s weights to bf16 in place.
    A quantised model is passed in as fp32 and scored as it is."""

    def __init__(self, model, tokenizer, *, threshold: float = 0.5, name: str = "", meta: dict | None = None,
                 max_length: int = 256, stride: int = 64, device: str = "cpu", long_text: str = "windows_max",
                 normalize: bool = True, precision: str = "auto"):
        if long_text not in ("head_tail", "windows_max"):
            raise ValueError(f"long_text: {long_text!r}; use head_tail or windows_max")
        import torch
        from guardray.precision import resolve
        # bf16 where the device computes it natively ("auto"), else fp32; scores are fp32 either way
        self.precision = resolve(precision, device)
        self.model = model.eval().to(device)
        if self.precision == "bf16":
            # scoring only, so the weights themselves go bf16 (the model is cast in place): autocast would re-cast
            # the fp32 weights on every call, which cost a lone short text 10 ms against 6 ms in fp32, where bf16
            # weights take 6 ms; on moderation-length texts 3x fp32's texts/s (benchmarks/precision.md)
            self.model = self.model.to(torch.bfloat16)
        elif any(p.is_floating_point() and p.dtype != torch.float32 for p in self.model.parameters()):
            # fp32 is fp32 for a folder stored in bf16/fp16 too (transformers keeps the stored dtype): as calibrated,
            # and not emulated bf16 on a CPU without it. A dynamically quantised model keeps fp32 parameters: untouched
            self.model = self.model.float()
        self.tokenizer = tokenizer
        self.threshold = float(threshold)
        self.name = name
        self.meta = meta or {}
        cap = getattr(tokenizer, "model_max_length", None)
        self.max_length = min(max_length, cap) if cap and cap < 1_000_000 else max_length
        self.stride = min(stride, self.max_length // 2)
        self.device = device
        self.long_text = long_text
        self.normalize = normalize  # guardray.core.normalize on every scored text (leetspeak, look-alikes, ...)
        from guardray.core.taxonomy import policy_of
        labels = model.config.id2label
        self.codes: tuple[str, ...] = tuple(labels[i] for i in range(1, model.config.num_labels))
        self.policy = policy_of(self.meta)  # what the checkpoint was trained for (names, OpenAI mapping)

    @classmethod
    def load(cls, name_or_path: str, *, device: str = "cpu", max_length: int | None = None, stride: int = 64,
             threshold: float | None = None, normalize: bool | None = None,
             precision: str = "auto") -> "GuardClassifier":
        """`normalize`: canonicalise inputs before scoring (guardray.core.normalize); None = the checkpoint's
        guardray.json "scoring.normalize", on when absent."""
        from guardray.models import resolve
        path = resolve(name_or_path)
        meta = read_meta(path)
        model, tok = load_backbone(path, pooling=(meta.get("scoring") or {}).get("pooling", "cls"),
                                   label_names=tuple(meta.get("label_names") or LABEL_NAMES))
        thr = threshold if threshold is not None else meta.get("threshold", 0.5)
        scoring = meta.get("scoring") or {}
        long_text = scoring.get("long_text", "windows_max")
        ml = max_length or scoring.get("max_length") or meta.get("max_length", 256)
        norm = scoring.get("normalize", True) if normalize is None else normalize
        return cls(model, tok, threshold=thr, name=name_or_path, meta=meta, max_length=ml, stride=stride,
                   device=device, long_text=long_text, normalize=bool(norm), precision=precision)

    @property
    def trained(self) -> bool:
        return bool(self.meta)

    def score(self, texts: list[str], batch_size: int = 32, progress: bool = False,
              max_tokens: int | None = None, pad_waste: float | None = PAD_WASTE) -> Scores:
        """Texts are scored in forward passes of similar length (ascending). `max_tokens` caps a pass at rows x
        longest-row padded tokens; `pad_waste` closes a pass of more than SMALL_PASS_TOKENS padded tokens when
        padding would exceed that share of its real tokens (None = off). On CPU a forward pass costs about its
        padded tokens once it holds a few hundred, so padding is wasted time: a server's batch of 8 mixed-length
        moderation texts padded to the longest ran at half the texts/s of one text per pass
        (benchmarks/serve.md). Scores do not depend on the grouping."""
        import torch
        t0 = time.perf_counter()
        n = len(texts)
        if n == 0:
            return Scores(np.zeros(0), np.zeros((0, len(self.codes))))
        if self.normalize:
            from guardray.core.normalize import normalize
            texts = [normalize(t) for t in texts]
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
        probs = np.zeros((len(items), 1 + len(self.codes)), dtype=np.float32)
        batches = forward_passes([len(it["input_ids"]) for it in items], batch_size, max_tokens, pad_waste)
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
        out = np.zeros((n, 1 + len(self.codes)), dtype=np.float32)
        np.maximum.at(out, np.asarray(owner), probs)
        return Scores(out[:, 0], out[:, 1:], time.perf_counter() - t0, len(items))

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        s = self.score(texts, batch_size)
        return [{"label": "unsafe" if u >= self.threshold else "safe", "score": float(u),
                 "categories": {c: float(v) for c, v in zip(self.codes, row)}}
                for u, row in zip(s.unsafe, s.categories)]
