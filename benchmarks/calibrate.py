"""Does a threshold set by `guardray calibrate` on n labelled messages of a traffic source hold on fresh messages of
that source, and does the command's cross-fitted estimate say what it will be?

Each evaluation set stands in for one user's traffic. A draw takes n random rows as the user's labelled sample
(what `guardray calibrate --data` would get), chooses the threshold there exactly as the command does, and counts
FPR / recall / F1 on the set's other rows (fresh traffic of the same source). 30 draws per cell; the table gives
the mean and the 5th-95th percentile range over draws, beside the checkpoint's own training-time threshold on the
same fresh rows. `covered` = the share of draws whose fresh-row FPR falls inside the 95% interval the command
reports (order statistics for `target_fpr`, cross-fitted Wilson for `f1_1se`). The `flag_rate` rows calibrate on
the sample's texts alone (labels dropped) and their estimate and `covered` are for the share of fresh rows flagged.

Nothing here ships: the guard's reported numbers (README, benchmarks/quality.md) stay at its own threshold, and no
threshold chosen here is used anywhere. This measures the calibration *tool* on data from outside the team.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/calibrate.py --model runs/demo/classifier/round-2 \\
        --data ../shared/data/openai-moderation ../shared/data/xstest ../shared/data/toxigen-demonstrations \\
        ../shared/data/ethos

`--intervals RUN` instead compares the two FPR intervals a `target_fpr` threshold could report (cross-fitted
Wilson, order statistic) on RUN's own validation split (the pipeline's split of RUN/data/train-round-0.parquet):
200 draws of n rows, coverage of the FPR on the other rows and mean width. That choice is made on team data only:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/calibrate.py --model runs/demo/classifier/round-2 --intervals runs/demo
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELLS = [("target_fpr", 0.05), ("target_fpr", 0.10), ("f1_1se", None), ("flag_rate", 0.20)]


def counts(y: np.ndarray, s: np.ndarray, thr: float) -> tuple[float, float, float]:
    f = s >= thr
    tp, fp, fn = int((f & y).sum()), int((f & ~y).sum()), int((~f & y).sum())
    return fp / max(1, int((~y).sum())), tp / max(1, int(y.sum())), 2 * tp / max(1, 2 * tp + fp + fn)


def summary(vals: list[float]) -> str:
    v = np.asarray(vals)
    return f"{v.mean():.3f} ({np.percentile(v, 5):.3f}-{np.percentile(v, 95):.3f})"


def intervals(y: np.ndarray, s: np.ndarray, ns=(100, 300), targets=(0.05, 0.10), draws: int = 200) -> None:
    from guardray.calibrate import cross_fitted, order_statistic_interval
    from guardray.core.calibration import choose_threshold
    rng = np.random.default_rng(0)
    print("| n | target | cross-fitted Wilson: coverage / mean width | order statistic: coverage / mean width |\n"
          "|---:|---:|---|---|")
    for n in ns:
        for target in targets:
            cov, width = {"xfit": 0, "order": 0}, {"xfit": [], "order": []}
            for _ in range(draws):
                d = rng.permutation(len(y))
                yc, sc, fresh = y[d[:n]], s[d[:n]], d[n:]
                t = choose_threshold(yc.astype(int), sc, "target_fpr", target)
                fpr = float((s[fresh][~y[fresh]] >= t).mean())
                ivs = {"xfit": cross_fitted(yc, sc, "target_fpr", target, repeats=3)["fpr_ci"],
                       "order": order_statistic_interval(int(((sc >= t) & ~yc).sum()), int((~yc).sum()))}
                for k, (lo, hi) in ivs.items():
                    cov[k] += lo <= fpr <= hi
                    width[k].append(hi - lo)
            print(f"| {n} | {target:.2f} | " + " | ".join(f"{cov[k] / draws:.3f} / {np.mean(width[k]):.3f}"
                                                         for k in ("xfit", "order")) + " |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/demo/classifier/round-2")
    ap.add_argument("--data", nargs="+", default=[])
    ap.add_argument("--intervals", default=None, metavar="RUN", help="compare FPR intervals on RUN's validation split")
    ap.add_argument("--n", nargs="+", type=int, default=[100, 300, 1000])
    ap.add_argument("--draws", type=int, default=30)
    args = ap.parse_args(argv)
    from guardray.calibrate import expected
    from guardray.classifier import GuardClassifier
    from guardray.calibrate import choose
    from guardray.evaluate import load_eval_set
    clf = GuardClassifier.load(args.model)
    if args.intervals:
        from guardray.core.config import load_config
        from guardray.core.records import read_examples
        from guardray.core.splits import split_validation
        run = Path(args.intervals)
        cfg = load_config(run / "config.yaml")
        _, val = split_validation(read_examples(run / "data" / "train-round-0.parquet").examples,
                                  cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
        intervals(np.array([e.unsafe for e in val]), np.asarray(clf.score([e.model_text for e in val]).unsafe,
                                                                dtype=np.float64))
        return 0
    print(f"model {args.model}: training-time threshold {clf.threshold:.3f} "
          f"({clf.meta.get('threshold_policy')}); {args.draws} draws per cell\n")
    print("| set | n labelled | policy | threshold | fresh-row FPR | fresh-row recall | fresh-row F1 | "
          "cross-fitted estimate (flag_rate: share flagged) | covered |\n|---|---:|---|---|---|---|---|---|---:|")
    for path in args.data:
        name, ex = load_eval_set(path)
        y = np.array([e.unsafe for e in ex])
        s = np.asarray(clf.score([e.model_text for e in ex], batch_size=32).unsafe, dtype=np.float64)
        rng = np.random.default_rng(0)
        for n in [m for m in args.n if m <= len(ex) // 2]:
            draws = [rng.permutation(len(ex)) for _ in range(args.draws)]
            own = [counts(y[d[n:]], s[d[n:]], clf.threshold) for d in draws]
            print(f"| {name} | {n} | training-time | {clf.threshold:.3f} | {summary([o[0] for o in own])} | "
                  f"{summary([o[1] for o in own])} | {summary([o[2] for o in own])} | - | - |")
            for policy, target in CELLS:
                thr, res, est, cov = [], [], [], 0
                for d in draws:
                    cal, fresh = d[:n], d[n:]
                    if y[cal].all() or not y[cal].any():
                        continue
                    t = choose(y[cal], s[cal], policy, target or 0.05)
                    thr.append(t)
                    res.append(counts(y[fresh], s[fresh], t))
                    if policy == "flag_rate":  # unlabelled: the interval is for the share flagged
                        cf = expected(None, s[cal], t, policy, target, repeats=3)
                        est.append(cf["flag_rate"])
                        cov += cf["flag_ci"][0] <= float((s[fresh] >= t).mean()) <= cf["flag_ci"][1]
                        continue
                    cf = expected(y[cal], s[cal], t, policy, target or 0.05, repeats=3)
                    est.append(cf["fpr"])
                    cov += cf["fpr_ci"][0] <= res[-1][0] <= cf["fpr_ci"][1]
                label = f"{policy} {target:g}" if target else policy
                print(f"| {name} | {n} | {label} | {summary(thr)} | {summary([r[0] for r in res])} | "
                      f"{summary([r[1] for r in res])} | {summary([r[2] for r in res])} | {summary(est)} | "
                      f"{cov / max(1, len(res)):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
