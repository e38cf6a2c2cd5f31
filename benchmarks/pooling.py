"""What should the classifier head read: BERT's [CLS] pooler or the mean of the last hidden states?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pooling.py frozen [seed|genre]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pooling.py finetune {cls|mean} [seed|genre]   # ~9 min each, 2 cores

all-MiniLM-L6-v2 was trained (sentence-transformers) so that the *mean* of its token states is a sentence
embedding; `AutoModelForSequenceClassification`'s head reads BERT's pretrained [CLS] pooler instead. Compared on the
packaged seeds only, never on evaluation data, on two validation splits:

- `seed`: the trainer's split (15%, grouped by root seed, 60% benign; guardray.trainer.split_validation);
- `genre`: train on requests, questions and code, validate on the genres held out from training (chat, comments,
  posts, emails, stories) - a distribution shift the team can measure on its own data, as deployment traffic is.

`frozen`: logistic regression (C=1, class-balanced) on the frozen encoder's features: the mean of the last hidden
states (L2-normalised), the raw [CLS] state, and the [CLS] pooler output. `finetune`: the demo's recipe (lr 8e-5, 2
epochs, batch 32, 128 tokens, warm-up 0.1, AdamW wd 0.01, class-balanced BCE) on one unsafe logit, a plain torch
loop (guardray.trainer's schedule, without Ray), the head reading the pooler (`cls`) or the masked mean (`mean`).
Results: benchmarks/pooling.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHIFT = {"genre:comment", "genre:post", "genre:chat", "genre:email", "genre:story"}


def split(kind: str):
    from guardray.data import SEEDS_PATH, load_seeds
    from guardray.core.splits import split_validation
    ex = load_seeds([SEEDS_PATH])  # the prompt seeds
    if kind == "genre":
        return [e for e in ex if not SHIFT & set(e.tags)], [e for e in ex if SHIFT & set(e.tags)]
    return split_validation(ex, 0.15, seed=0, safe_share=0.6)


def frozen(kind: str) -> None:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from transformers import AutoModel, AutoTokenizer
    from guardray.models import resolve
    tr, va = split(kind)
    tok, m = AutoTokenizer.from_pretrained(resolve("minilm")), AutoModel.from_pretrained(resolve("minilm")).eval()

    def emb(texts):
        out = {"mean": [], "cls": [], "pooler": []}
        with torch.no_grad():
            for i in range(0, len(texts), 64):
                b = tok(texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
                o = m(**b)
                h, a = o.last_hidden_state, b["attention_mask"].unsqueeze(-1).float()
                out["mean"].append(((h * a).sum(1) / a.sum(1)).numpy())
                out["cls"].append(h[:, 0].numpy())
                out["pooler"].append(o.pooler_output.numpy())
        return {k: np.concatenate(v) for k, v in out.items()}
    xtr, xva = emb([e.text for e in tr]), emb([e.text for e in va])
    ytr, yva = np.array([e.unsafe for e in tr]), np.array([e.unsafe for e in va])
    for k in xtr:
        a, b = xtr[k], xva[k]
        if k == "mean":
            a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
        q = LogisticRegression(C=1, max_iter=3000, class_weight="balanced").fit(a, ytr).predict_proba(b)[:, 1]
        print(f"frozen {kind} {k}: val AUPRC {average_precision_score(yva, q):.3f} ROC-AUC {roc_auc_score(yva, q):.3f}")


def finetune(pool: str, kind: str) -> None:
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import average_precision_score, roc_auc_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from guardray.models import resolve
    from guardray.train_steps import lr_lambda
    torch.set_num_threads(2)
    tr, va = split(kind)
    print(len(tr), sum(e.unsafe for e in tr), len(va), sum(e.unsafe for e in va), flush=True)
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(resolve("minilm"), num_labels=1)

    def fwd(b):
        if pool == "cls":
            return m(**b).logits[:, 0]
        h = m.bert(**b).last_hidden_state
        a = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        return m.classifier(m.dropout((h * a).sum(1) / a.sum(1)))[:, 0]

    def batches(items, bs, shuffle, seed):
        idx = np.random.default_rng(seed).permutation(len(items)) if shuffle else np.arange(len(items))
        for s in range(0, len(idx), bs):
            sel = [items[i] for i in idx[s:s + bs]]
            b = tok([e.text for e in sel], padding=True, truncation=True, max_length=128, return_tensors="pt")
            b.pop("token_type_ids", None)
            yield dict(b), torch.tensor([float(e.unsafe) for e in sel])
    epochs, steps = 2, 2 * ((len(tr) + 31) // 32)
    opt = torch.optim.AdamW(m.parameters(), lr=8e-5, weight_decay=0.01)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, 0.1))
    pw = torch.tensor((len(tr) - sum(e.unsafe for e in tr)) / sum(e.unsafe for e in tr))
    for ep in range(epochs):
        m.train()
        t0 = time.time()
        for b, y in batches(tr, 32, True, ep):
            loss = F.binary_cross_entropy_with_logits(fwd(b), y, pos_weight=pw)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            sch.step()
        m.eval()
        with torch.no_grad():
            p = np.concatenate([torch.sigmoid(fwd(b)).numpy() for b, _ in batches(va, 64, False, 0)])
        y = np.array([e.unsafe for e in va])
        print(f"finetune {kind} {pool} epoch {ep + 1}: val AUPRC {average_precision_score(y, p):.3f} "
              f"ROC-AUC {roc_auc_score(y, p):.3f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["frozen"]:
        frozen(args[1] if len(args) > 1 else "seed")
    elif args[:1] == ["finetune"] and len(args) >= 2 and args[1] in ("cls", "mean"):
        finetune(args[1], args[2] if len(args) > 2 else "seed")
    else:
        raise SystemExit(__doc__)
