"""Is the 22M-parameter backbone the limit? Linear probes on frozen features, chosen on validation, evaluated once.

Every CPU lever tried on the quality issue (recipes, soups, WiSE-FT, k-NN views, seed genres) moved evaluation AUPRC
by less than the run-seed spread, and the errors look like bias of the training text, not variance
(benchmarks/quality.md). The other explanation is capacity: MiniLM-L6 (22.7M parameters, trained for sentence
similarity) may not represent what separates a harmful request from a harmless one that shares its words. The only
larger offline model is the generator, SmolLM2-135M-Instruct (135M), and fine-tuning it as a classifier on two cores
would take hours, so this script asks the cheaper question first: with the backbone *frozen*, how well does a
linear probe on each backbone's features separate the same training data, and how does it transfer?

1. recomputes a run's round-0 split (held-out seeds and their children, grouped by seed), as benchmarks/knn_mix.py;
2. embeds train, validation and (with --eval) the evaluation sets with each backbone: the attention-masked mean of
   the hidden states of a few layers (bf16 where the CPU computes it natively, 256 tokens, length-sorted batches),
   cached under --out so a rerun is quick;
3. fits a standardised logistic regression per backbone and layer for C in a small grid, and picks the layer and C
   with the best *validation* AUPRC; the threshold by the f1_1se rule on validation (as the trainer does);
4. only then scores the evaluation sets once: each backbone's chosen probe beside the run's fine-tuned round-0
   checkpoint (same training data) at its own threshold. Nothing here chooses anything by an evaluation score.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/backbone_probe.py --run runs/demo \\
        --eval ../shared/data/openai-moderation ../shared/data/xstest ../shared/data/toxigen-demonstrations \\
        ../shared/data/ethos

About 11 minutes on 2 cores after a demo (SmolLM2 embeds ~1,400 tokens/s there; MiniLM ~10x faster).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONES = {"minilm": [3, 6], "smollm2-135m": [6, 12, 18, 24, 30]}
C_GRID = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


def embed(name: str, layers: list[int], texts: list[str], max_length: int, batch_tokens: int = 4096) -> np.ndarray:
    """(len(layers), n, hidden) attention-masked means of the given hidden-state layers, input order."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from guardray.models import resolve
    from guardray.precision import resolve as resolve_precision
    path = resolve(name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = torch.bfloat16 if resolve_precision("auto") == "bf16" else torch.float32
    model = AutoModel.from_pretrained(path, dtype=dtype).eval()
    ids = tok(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(x) for x in ids])
    out = np.zeros((len(layers), len(texts), model.config.hidden_size), dtype=np.float32)
    i, t0 = 0, time.time()
    with torch.inference_mode():
        while i < len(order):
            j = i + 1
            while j < len(order) and (j - i + 1) * len(ids[order[j]]) <= batch_tokens:
                j += 1
            idx = order[i:j]
            enc = tok.pad({"input_ids": [ids[k] for k in idx]}, return_tensors="pt")
            hs = model(**enc, output_hidden_states=True).hidden_states
            m = enc["attention_mask"].unsqueeze(-1).to(hs[0].dtype)
            for li, layer in enumerate(layers):
                out[li, idx] = ((hs[layer] * m).sum(1) / m.sum(1)).float().numpy()
            i = j
    print(f"  {name}: {len(texts)} texts in {time.time() - t0:.0f} s", flush=True)
    return out


def cached(out: Path, key: str, name: str, layers: list[int], texts: list[str], max_length: int) -> np.ndarray:
    """embed(), stored under `out` keyed by the texts themselves, so another run's features are never reused."""
    import hashlib
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    f = out / f"{key}-{name}-{max_length}-{digest}.npy"
    if f.exists():
        return np.load(f)
    x = embed(name, layers, texts, max_length)
    np.save(f, x)
    return x


def metrics(y: np.ndarray, p: np.ndarray, thr: float) -> str:
    from guardray.core.metrics import auprc, binary_metrics
    m = binary_metrics(y, p, thr)
    return f"{m['f1'] or 0.0:.3f} / {m['fpr'] or 0.0:.3f} / {auprc(y, p):.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="a pipeline run folder (after make demo)")
    ap.add_argument("--ckpt", default="round-0", help="the fine-tuned checkpoint trained on the same data")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--out", default="runs/backbone-probe", help="feature cache")
    ap.add_argument("--eval", nargs="*", default=[], help="evaluation set folders, scored once after the choice")
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from guardray.classifier import GuardClassifier
    from guardray.core.calibration import choose_threshold
    from guardray.core.config import load_config
    from guardray.core.metrics import auprc
    from guardray.core.records import read_examples
    from guardray.core.splits import split_validation
    from guardray.evaluate import load_eval_set

    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(run / "config.yaml")
    train, val = split_validation(read_examples(run / "data" / "train-round-0.parquet").examples,
                                  cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    y_tr = np.array([int(e.unsafe) for e in train])
    y_va = np.array([int(e.unsafe) for e in val])
    print(f"{run}: train {len(train)} ({y_tr.sum()} unsafe), validation {len(val)} ({y_va.sum()} unsafe)", flush=True)
    clf = GuardClassifier.load(str(run / "classifier" / args.ckpt))
    evals = [load_eval_set(p) for p in args.eval]

    chosen = {}
    print("\n| backbone | layer | best C | validation AUPRC |\n|---|---:|---:|---:|")
    for name, layers in BACKBONES.items():
        x_tr = cached(out, "train", name, layers, [e.text for e in train], args.max_length)
        x_va = cached(out, "val", name, layers, [e.text for e in val], args.max_length)
        best = (-1.0, 0, 0.0, None, None)
        for li, layer in enumerate(layers):
            sc = StandardScaler().fit(x_tr[li])
            a_tr, a_va = sc.transform(x_tr[li]), sc.transform(x_va[li])
            row = (-1.0, 0.0, None)
            for c in C_GRID:
                lr = LogisticRegression(C=c, max_iter=3000).fit(a_tr, y_tr)
                row = max(row, (auprc(y_va, lr.predict_proba(a_va)[:, 1]), c, lr), key=lambda r: r[0])
            print(f"| {name} | {layer} | {row[1]} | {row[0]:.4f} |", flush=True)
            if row[0] > best[0]:
                best = (row[0], li, row[1], row[2], sc)
        a, li, c, lr, sc = best
        p_va = lr.predict_proba(sc.transform(x_va[li]))[:, 1]
        thr = choose_threshold(y_va, p_va, "f1_1se", 0.05)
        chosen[name] = (li, lr, sc, thr)
        print(f"| {name} chosen | {layers[li]} | {c} | {a:.4f} (threshold {thr:.3f}, F1 / FPR / AUPRC "
              f"{metrics(y_va, p_va, thr)}) |", flush=True)
    p_ck = np.asarray(clf.score([e.text for e in val]).unsafe, dtype=np.float64)
    print(f"| fine-tuned {args.ckpt} | - | - | {auprc(y_va, p_ck):.4f} (threshold {clf.threshold:.3f}, F1 / FPR / "
          f"AUPRC {metrics(y_va, p_ck, clf.threshold)}) |")
    if not evals:
        return 0
    names = list(BACKBONES)
    print(f"\n| set | n | fine-tuned {args.ckpt} F1 / FPR / AUPRC | "
          + " | ".join(f"{n} probe" for n in names) + " |\n|---|---:|---|" + "---|" * len(names))
    for set_name, ex in evals:
        texts = [e.text for e in ex]
        y = np.array([int(e.unsafe) for e in ex])
        cells = [metrics(y, np.asarray(clf.score(texts).unsafe, dtype=np.float64), clf.threshold)]
        for name, layers in BACKBONES.items():
            li, lr, sc, thr = chosen[name]
            x = cached(out, f"eval-{set_name}", name, layers, texts, args.max_length)
            cells.append(metrics(y, lr.predict_proba(sc.transform(x[li]))[:, 1], thr))
        print(f"| {set_name} | {len(ex)} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
