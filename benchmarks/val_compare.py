"""Two runs' checkpoints side by side on validation data neither trained on: the examples both runs' round-0
validation splits share (held-out seeds and their operator children), by group and by style, plus any group only
one run has (e.g. the held-out synthetic children of a new strategy). Reads only the runs' own data, never an
evaluation set, so a change can be judged here before ../shared/data scores it once.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/val_compare.py runs/demo-base runs/demo \\
        [--ckpt round-0 --ckpt round-2]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/val_compare.py runs/abl-v3 runs/abl-v4   # two ablation.py --out

Each checkpoint is scored at its own calibrated threshold (F1, FPR) and threshold-free (AUPRC). The split is
recomputed as the pipeline draws it (guardray.core.splits.split_validation over each run's
data/train-round-0.parquet with the run's data.val_fraction, run.seed and data.val_safe_share). For an
`benchmarks/ablation.py --out` folder the split is its val.jsonl and the checkpoints are its trained rows.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def val_split(run: Path):
    from guardray.core.config import load_config
    from guardray.core.records import read_examples
    from guardray.core.splits import split_validation
    if (run / "facts.json").exists():  # an ablation.py --out folder: its validation set is written out
        return read_examples(run / "val.jsonl").examples
    cfg = load_config(run / "config.yaml")
    _, val = split_validation(read_examples(run / "data" / "train-round-0.parquet").examples, cfg.data.val_fraction,
                              cfg.run.seed, safe_share=cfg.data.val_safe_share)
    return val


def row(name: str, y: np.ndarray, p: np.ndarray, thr: float) -> str:
    from guardray.core.metrics import auprc, binary_metrics
    m = binary_metrics(y.astype(int), p, thr)
    f1 = f"{m['f1']:.3f}" if y.any() else "n/a"
    fpr = f"{m['fpr']:.3f}" if (~y).any() else "n/a"
    a = auprc(y.astype(int), p) if 0 < y.sum() < len(y) else None
    return f"{name} | {len(y)} | {int(y.sum())} | {f1} | {fpr} | {'n/a' if a is None else f'{a:.3f}'}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs=2, help="two run folders (runs/NAME)")
    ap.add_argument("--ckpt", action="append", default=[], help="checkpoint names under classifier/ "
                                                                 "(default: round-0 and each run's last round)")
    args = ap.parse_args(argv)
    from guardray.classifier import GuardClassifier
    runs = [Path(r) for r in args.runs]
    vals = [val_split(r) for r in runs]
    shared = set(e.id for e in vals[0]) & set(e.id for e in vals[1])
    root_source = {e.id: e.source for v in vals for e in v if not e.seed_id}

    def src(e):  # a seed's source; a child's is its seed's ("synth" otherwise)
        return root_source.get(e.seed_id or e.id, e.source)
    sources = [{src(e) for e in v} for v in vals]
    by_id = {e.id: e for e in vals[1]}
    groups: dict[str, list] = defaultdict(list)
    for e in vals[1]:
        if e.id in shared:
            groups["shared: all"].append(e)
            groups[f"shared: {e.stage}"].append(e)
            groups[f"shared style: {e.style or 'none'}"].append(e)
    for k, val in enumerate(vals):
        for e in val:
            if e.id not in shared and e.stage not in ("seed", "operator"):
                groups[f"only {runs[k].name}: {e.stage}"].append(e)
            elif e.id not in shared and src(e) not in sources[1 - k]:  # held-out seeds of a source only k has
                groups[f"only {runs[k].name}: {src(e)} + children"].append(e)
    print(f"validation: {runs[0]} {len(vals[0])}, {runs[1]} {len(vals[1])}, shared {len(shared)} "
          f"({sum(by_id[i].unsafe for i in shared)} unsafe)\n")
    print("checkpoint | group | n | unsafe | F1 | FPR | AUPRC")
    print("|".join(["---"] * 7))
    for run in runs:
        if (run / "facts.json").exists():
            ckpts = args.ckpt or [p.parent.name for p in sorted(run.glob("*/guardray.json"))]
            home = run
        else:
            ckpts = args.ckpt or ["round-0", sorted((p.name for p in (run / "classifier").glob("round-*")
                                                     if (p / "guardray.json").exists()),
                                                    key=lambda n: int(n.split("-")[1]))[-1]]
            home = run / "classifier"
        for c in dict.fromkeys(ckpts):
            clf = GuardClassifier.load(str(home / c))
            texts = list(dict.fromkeys(e.text for ex in groups.values() for e in ex))
            score = dict(zip(texts, clf.score(texts).unsafe))  # each text once
            for g, ex in sorted(groups.items()):
                y = np.array([e.unsafe for e in ex], dtype=bool)
                p = np.array([score[e.text] for e in ex])
                print(f"{run.name}/{c} | " + row(g, y, p, clf.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
