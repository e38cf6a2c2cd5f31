"""FPR at a fixed recall (0.7 / 0.8 / 0.9) per evaluation set, from the scores an ablation run wrote: a
threshold-free view of over-flagging, so two checkpoints with different calibrated thresholds compare fairly.

    .venv/bin/python benchmarks/fpr_at_recall.py runs/abl-v4-s0 runs/abl-v5-s0    # benchmarks/ablation.py --out folders
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SETS = ("openai-moderation", "xstest", "toxigen-demonstrations", "ethos", "davidson-hate-offensive")
RECALLS = (0.7, 0.8, 0.9)


def fpr_at_recall(y: np.ndarray, p: np.ndarray, recall: float) -> float:
    """The share of safe rows scored at or above the threshold that flags `recall` of the unsafe rows."""
    return float((p[~y] >= np.quantile(p[y], 1 - recall)).mean())


def main(runs: list[str]) -> int:
    if not runs:
        raise SystemExit(__doc__)
    print("set | run | " + " | ".join(f"FPR at recall {r}" for r in RECALLS))
    print("|".join(["---"] * (2 + len(RECALLS))))
    for s in SETS:
        for run in runs:
            f = Path(run) / "eval" / "operators" / "scores" / f"{s}.jsonl"
            if not f.exists():
                continue
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            y = np.array([r["label"] == "unsafe" for r in rows])
            p = np.array([r["score"] for r in rows])
            print(f"{s} | {Path(run).name} | " + " | ".join(f"{fpr_at_recall(y, p, r):.3f}" for r in RECALLS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
