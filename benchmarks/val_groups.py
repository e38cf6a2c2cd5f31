"""Validation AUPRC of a run's checkpoint per group of its validation split (seeds, each operator, each synthetic
strategy): where does a checkpoint lose? Reads only the run's own data, never an evaluation set.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/val_groups.py runs/demo/data/train-round-0.parquet \\
        runs/demo/classifier/round-0

The split is recomputed as the pipeline draws it (guardray.core.splits.split_validation over the round's training
file, data.val_fraction 0.15, seed 0, benign share 0.6: the defaults the demo uses).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    from guardray.classifier import GuardClassifier
    from guardray.core.metrics import auprc
    from guardray.core.records import read_examples
    from guardray.core.splits import split_validation
    _, val = split_validation(read_examples(argv[0]).examples, 0.15, 0, safe_share=0.6)
    clf = GuardClassifier.load(argv[1])
    p = clf.score([e.text for e in val]).unsafe
    y = np.array([e.unsafe for e in val])
    print(f"all: n {len(val)} (unsafe {int(y.sum())}) AUPRC {auprc(y.astype(int), p):.3f}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(val):
        op = next((t for t in e.tags if t.startswith("op:")), None)
        groups[op or e.stage].append(i)
    for k, idx in sorted(groups.items()):
        yy, pp = y[idx], p[idx]
        a = f"{auprc(yy.astype(int), pp):.3f}" if 0 < yy.sum() < len(yy) else "n/a"
        fn, fp = int(((pp < clf.threshold) & yy).sum()), int(((pp >= clf.threshold) & ~yy).sum())
        print(f"{k:18s} n {len(idx):4d} (unsafe {int(yy.sum()):3d}) AUPRC {a}  FN {fn}  FP {fp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
