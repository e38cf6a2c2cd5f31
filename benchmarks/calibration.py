"""Threshold policies side by side on one trained checkpoint: `best_f1` against `f1_1se` (guardray.core.calibration),
both chosen on the ablation's validation set scored as the checkpoint is served (canonicalised text), then the
shared evaluation sets scored once at each threshold from the checkpoint's stored evaluation scores. Prints a
markdown table (pasted by hand into benchmarks/quality.md, "Calibration").

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ablation.py --only +operators --demo /nonexistent --out runs/abl-cal
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/calibration.py --run runs/abl-cal

The threshold's stability is its standard deviation over `--boot` bootstrap resamples of the validation set (each
resample re-chooses the threshold). Nothing is chosen on the evaluation sets: they are only scored.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "abl-cal"), help="a benchmarks/ablation.py --out folder")
    ap.add_argument("--row", default="+operators", help="the ablation row whose checkpoint is compared")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--boot", type=int, default=100)
    args = ap.parse_args(argv)

    import ablation
    from guardray.classifier import GuardClassifier
    from guardray.core import metrics as M
    from guardray.core.calibration import best_f1_threshold, f1_1se_threshold
    from guardray.core.config import load_config

    run, row = Path(args.run), args.row.lstrip("+")
    ckpt = run / row
    if not (ckpt / "guardray.json").exists():
        sys.exit(f"{ckpt} holds no checkpoint: run benchmarks/ablation.py --only {args.row} --out {run} first")
    cfg = load_config(args.config, [])
    _, val, facts = ablation.build_rows(types.SimpleNamespace(demo="/nonexistent", only=args.row, selection=False),
                                        cfg)
    scores = GuardClassifier.load(str(ckpt)).score([e.text for e in val]).unsafe  # as served: canonical text
    y = np.array([e.unsafe for e in val], dtype=int)
    rng = np.random.default_rng(7)
    pol = {}
    for name, fn in (("best_f1", best_f1_threshold), ("f1_1se", f1_1se_threshold)):
        t = fn(y, scores)
        boot = [fn(y[i], scores[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(args.boot))]
        pol[name] = {"threshold": t, "val": M.binary_metrics(y, scores, t), "sd": float(np.std(boot))}
    sets = {}
    for f in sorted((run / "eval" / row / "scores").glob("*.jsonl")):
        recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        yy = np.array([r["label"] == "unsafe" for r in recs], dtype=int)
        ss = np.array([r["score"] for r in recs], dtype=float)
        sets[f.stem] = {"auprc": M.auprc(yy, ss),
                        **{name: M.binary_metrics(yy, ss, p["threshold"]) for name, p in pol.items()}}
    print(f"checkpoint {ckpt}, validation n={len(val)} ({facts['val_unsafe_share']:.0%} unsafe), "
          f"{args.boot} bootstrap resamples\n")
    print("| policy | threshold (bootstrap sd) | val F1 / recall / FPR | "
          + " | ".join(f"{s} F1 / FPR" for s in sets) + " |")
    print("|---|---:|---:|" + "---:|" * len(sets))
    for name, p in pol.items():
        v = p["val"]
        cells = " | ".join(f"{d[name]['f1']:.3f} / {d[name]['fpr']:.3f}" for d in sets.values())
        print(f"| {name} | {p['threshold']:.3f} ({p['sd']:.3f}) | {v['f1']:.3f} / {v['recall']:.3f} / {v['fpr']:.3f} "
              f"| {cells} |")
    print("\nAUPRC (threshold-free): " + ", ".join(f"{s} {d['auprc']:.3f}" for s, d in sets.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
