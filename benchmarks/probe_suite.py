"""Checkpoints on the team's held-out probes (benchmarks/probes/*/eval.jsonl), arm against arm.

The probes are team-written text that no seed writer saw and no run trains on (tests/test_foundation.py keeps every
probe line off the packaged seeds and the candidate parts). They are *not* evaluation data from ../shared: a change
may be judged on them before ../shared/data scores it once. Each probe is one genre of real traffic on both labels.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/probe_suite.py \\
        base=runs/abl-base-s0/operators,runs/abl-base-s1/operators,runs/abl-base-s2/operators \\
        v6=runs/abl-v6-s0/operators,runs/abl-v6-s1/operators,runs/abl-v6-s2/operators [--out FILE.md]

An arm is NAME=CHECKPOINT[,CHECKPOINT...] (checkpoints of one recipe, e.g. one per run seed). Each checkpoint is
scored at its own calibrated threshold (F1, FPR, recall) and threshold-free (AUPRC); a cell is the mean over the
arm's checkpoints, with the per-checkpoint AUPRCs after it. `all` pools the lines of every probe scored
(`--exclude figurative` leaves out the probe written by the v6 part's own writer).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def probe_sets(folder: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    from guardray.evaluate import load_eval_set
    sets = {}
    for f in sorted(folder.glob("*/eval.jsonl")):
        name, ex = load_eval_set(f)
        sets[f.parent.name] = ([e.text for e in ex], np.array([e.unsafe for e in ex], dtype=bool))
    if not sets:
        raise SystemExit(f"no probes under {folder} (expected {folder}/<name>/eval.jsonl)")
    return sets


def metrics(y: np.ndarray, p: np.ndarray, thr: float) -> dict[str, float]:
    from guardray.core.metrics import auprc, binary_metrics
    m = binary_metrics(y.astype(int), p, thr)
    return {"auprc": auprc(y.astype(int), p), "f1": m["f1"], "fpr": m["fpr"], "recall": m["recall"]}


def parse_arm(spec: str) -> tuple[str, list[str]]:
    name, sep, paths = spec.partition("=")
    if not sep or not name or not paths:
        raise argparse.ArgumentTypeError(f"an arm is NAME=CHECKPOINT[,CHECKPOINT...], got {spec!r}")
    missing = [p for p in paths.split(",") if not Path(p).exists()]
    if missing:
        raise argparse.ArgumentTypeError(f"arm {name}: no checkpoint folder {missing[0]} (train it first)")
    return name, paths.split(",")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arms", nargs="+", type=parse_arm, help="NAME=CHECKPOINT[,CHECKPOINT...]")
    ap.add_argument("--probes", type=Path, default=ROOT / "benchmarks" / "probes")
    ap.add_argument("--exclude", action="append", default=[], metavar="PROBE",
                    help="leave a probe out (e.g. one written by a candidate part's own writer); repeatable")
    ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    from guardray.classifier import GuardClassifier
    sets = {n: v for n, v in probe_sets(args.probes).items() if n not in args.exclude}
    if not sets:
        raise SystemExit(f"every probe under {args.probes} is excluded")
    names = [*sets, "all"]
    results: dict[str, dict[str, list[dict]]] = {}
    for arm, ckpts in args.arms:
        results[arm] = {n: [] for n in names}
        for ck in ckpts:
            clf = GuardClassifier.load(ck)
            ys, ps = [], []
            for n, (texts, y) in sets.items():
                p = np.asarray(clf.score(texts).unsafe, dtype=float)
                results[arm][n].append(metrics(y, p, clf.threshold))
                ys.append(y)
                ps.append(p)
            results[arm]["all"].append(metrics(np.concatenate(ys), np.concatenate(ps), clf.threshold))
            print(f"scored {ck} (threshold {clf.threshold:.3f})", file=sys.stderr)
    sizes = {n: (len(y), int(y.sum())) for n, (_, y) in sets.items()}
    sizes["all"] = (sum(s[0] for s in sizes.values()), sum(s[1] for s in sizes.values()))
    lines = ["| probe | n (unsafe) | arm | AUPRC (per checkpoint) | F1 | FPR | recall |", "|---|---|---|---|---:|---:|---:|"]
    for n in names:
        for arm in results:
            rs = results[arm][n]
            mean = {k: float(np.mean([r[k] for r in rs])) for k in ("auprc", "f1", "fpr", "recall")}
            each = " / ".join(f"{r['auprc']:.3f}" for r in rs)
            lines.append(f"| {n} | {sizes[n][0]} ({sizes[n][1]}) | {arm} | **{mean['auprc']:.3f}** ({each}) | "
                         f"{mean['f1']:.3f} | {mean['fpr']:.3f} | {mean['recall']:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
