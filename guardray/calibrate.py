"""`guardray calibrate`: set a checkpoint's decision threshold on a labelled sample of your own traffic.

The threshold a checkpoint carries was calibrated on the team's validation split at training time. Its FPR there
does not transfer: the demo guard's threshold flags 4% of benign validation texts and 20.5% of openai-moderation's
benign texts (README). No threshold rule fixes that without labels from the traffic it will guard, so this command
takes a few hundred labelled messages from the deployment and:

1. reads them (JSONL / CSV / Parquet, rows with `text` and `label`; `id` optional, other columns - timestamps, user
   ids - ignored and named; a bad row is named FILE:LINE, or counted by reason and skipped with `--skip-bad`);
2. scores them as served (GuardClassifier: the checkpoint's normalisation, long-text scoring and precision;
   a response row is read with its prompt, as in training);
3. reports the current threshold on the sample with 95% Wilson intervals for FPR and recall;
4. estimates what the chosen rule will give on *new* traffic from the same source by cross-fitting: the threshold is
   chosen on K-1 folds and counted on the held-out fold, over several shuffles, so the estimate is not the
   optimistic in-sample one; for `target_fpr` the FPR interval is distribution-free (order statistics of the
   benign scores), for the F1 rules a Wilson interval on the cross-fitted counts;
5. chooses the threshold on the whole sample (`--policy`: the checkpoint's own rule by default; `target_fpr`
   needs only benign rows; `flag_rate` needs no labels at all: flag at most that share of all traffic, e.g. what a
   review queue can take, which also caps the FPR) and, with `--out`, writes a copy of the checkpoint carrying
   it, with the calibration recorded in guardray.json and the model card; the original folder is never modified;
6. warns when the sample cannot support the target (an FPR of 1% measured on 100 benign rows is 0 or 1 false
   positive: its interval runs to 5%).

    guardray calibrate --model runs/demo/classifier/round-2 --data my_traffic.jsonl \\
        --policy target_fpr --target-fpr 0.05 --out runs/demo/classifier/round-2-my-traffic
    guardray calibrate --model runs/demo/classifier/round-2 --data logged_traffic.jsonl \\
        --policy flag_rate --flag-rate 0.02 --out runs/demo/classifier/round-2-2pct     # rows need only `text`
    guardray serve --model runs/demo/classifier/round-2-my-traffic

Pure scoring: no Ray, no training. The sample is used to choose a threshold, so it must not be a set you report
results on afterwards (score a different sample for that).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from guardray.core import metrics as M
from guardray.core.calibration import POLICIES, choose_threshold, fpr_threshold
from guardray.core.records import DataError, Example, LoadResult, now, read_many
from guardray.errors import UsageError

FOLDS, REPEATS = 5, 5
# flag_rate: the share of *all* traffic flagged (a review-queue budget); needs no labels
CALIBRATE_POLICIES = POLICIES + ("flag_rate",)
META_FILE, CARD_FILE = "guardray.json", "README.md"


def rates(y: np.ndarray | None, s: np.ndarray, threshold: float) -> dict:
    """The share flagged and, with labels, confusion counts, precision / recall / F1 / FPR; 95% Wilson intervals
    for the flagged share, FPR and recall (None where undefined or unlabelled)."""
    flagged = int((s >= threshold).sum())
    m = {"n": len(s), "flagged": flagged, "flag_rate": _ratio(flagged, len(s)),
         "flag_ci": M.wilson_interval(flagged, len(s)), "threshold": float(threshold)}
    if y is None:
        return dict(m, fpr=None, fpr_ci=None, recall=None, recall_ci=None, precision=None, f1=None)
    m.update(M.binary_metrics(y.astype(int), s, threshold))
    m["fpr_ci"] = M.wilson_interval(m["fp"], m["n_safe"])
    m["recall_ci"] = M.wilson_interval(m["tp"], m["n_unsafe"])
    return m


def choose(y: np.ndarray, s: np.ndarray, policy: str, target: float) -> float:
    """The threshold `policy` picks on (y, s); `flag_rate` ignores the labels (`target` = the share flagged)."""
    if policy == "flag_rate":
        return fpr_threshold(np.zeros(len(s), dtype=int), s, target)
    return choose_threshold(y.astype(int), s, policy, target)


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _folds(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index per row, stratified by label (each label's rows dealt round-robin after a shuffle)."""
    fold = np.zeros(len(y), dtype=int)
    for lab in (False, True):
        idx = np.nonzero(y == lab)[0]
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def cross_fitted(y: np.ndarray, s: np.ndarray, policy: str, target_fpr: float, folds: int = FOLDS,
                 repeats: int = REPEATS, seed: int = 0) -> dict | None:
    """Out-of-fold counts of `policy`: for each of `repeats` stratified K-fold shuffles, the threshold is chosen on
    K-1 folds and applied to the held-out one; counts are pooled over every fold and shuffle (each row is counted
    once per shuffle), rates and Wilson intervals computed on the pooled counts divided by `repeats`. None when a
    label the policy needs has fewer than 2 rows (K drops to the smaller label's count otherwise)."""
    n_unsafe, n_safe = int(y.sum()), int((~y).sum())
    need = [len(y)] if policy == "flag_rate" else [n_safe] if policy == "target_fpr" and n_unsafe == 0 \
        else [n_safe, n_unsafe]
    k = min([folds] + need)
    if k < 2:
        return None
    rng = np.random.default_rng(seed)
    tp = fp = fn = tn = 0
    thresholds = []
    for _ in range(repeats):
        fold = _folds(y, k, rng) if n_unsafe and n_safe else rng.permutation(len(y)) % k
        for f in range(k):
            fit, held = fold != f, fold == f
            thr = choose(y[fit], s[fit], policy, target_fpr)
            thresholds.append(thr)
            pred = s[held] >= thr
            tp += int((pred & y[held]).sum())
            fp += int((pred & ~y[held]).sum())
            fn += int((~pred & y[held]).sum())
            tn += int((~pred & ~y[held]).sum())
    # one shuffle counts every row once: divide so intervals reflect the sample size, not repeats x it
    tp, fp, fn, tn = (c / repeats for c in (tp, fp, fn, tn))
    return {"folds": k, "repeats": repeats, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "flag_rate": _ratio(tp + fp, len(y)), "flag_ci": M.wilson_interval(tp + fp, len(y)),
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "fpr": _ratio(fp, fp + tn),
            "fpr_ci": M.wilson_interval(fp, round(fp + tn)), "recall_ci": M.wilson_interval(tp, round(tp + fn)),
            "threshold_range": [float(min(thresholds)), float(max(thresholds))]}


def order_statistic_interval(fp: int, n_safe: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for the FPR on fresh traffic of a threshold placed between the fp-th and (fp+1)-th highest of n_safe
    benign scores (what `target_fpr` does). Under i.i.d. sampling the FPR of the fp-th highest benign score is
    Beta(fp, n_safe + 1 - fp) and of the (fp+1)-th Beta(fp + 1, n_safe - fp), whatever the score distribution; the
    interval takes the lower tail of the first and the upper tail of the second. Chosen over the cross-fitted Wilson
    interval on the demo's validation split (benchmarks/calibrate.md): coverage 0.90-0.96 against 0.83-0.92, the
    same width."""
    from scipy.stats import beta
    a = (1 - level) / 2
    lo = float(beta.ppf(a, fp, n_safe + 1 - fp)) if fp > 0 else 0.0
    hi = float(beta.ppf(1 - a, fp + 1, n_safe - fp)) if fp < n_safe else 1.0
    return lo, hi


def expected(y: np.ndarray | None, s: np.ndarray, threshold: float, policy: str, target_fpr: float,
             folds: int = FOLDS, repeats: int = REPEATS) -> dict | None:
    """What `threshold` (chosen on y, s by `policy`) should give on fresh traffic: the cross-fitted estimate, with
    the order-statistic interval for the rate the policy targets (FPR for `target_fpr`, the flagged share for
    `flag_rate`) and cross-fitted Wilson intervals otherwise. `y` None: unlabelled (flag_rate only)."""
    labelled = y is not None
    cf = cross_fitted(y if labelled else np.zeros(len(s), dtype=bool), s, policy, target_fpr, folds, repeats)
    if cf is None:
        return None
    cf["ci_method"] = "cross-fitted Wilson"
    if policy == "target_fpr":
        cf["fpr_ci"] = order_statistic_interval(int(((s >= threshold) & ~y).sum()), int((~y).sum()))
        cf["ci_method"] = "order statistic (FPR)"
    elif policy == "flag_rate":
        cf["flag_ci"] = order_statistic_interval(int((s >= threshold).sum()), len(s))
        cf["ci_method"] = "order statistic (flagged share)"
    if not labelled:
        cf.update(fpr=None, fpr_ci=None, recall=None, recall_ci=None, precision=None, f1=None)
    return cf


def warnings_for(n_safe: int, n_unsafe: int, policy: str, target_fpr: float, labelled: bool = True) -> list[str]:
    out = []
    if policy == "flag_rate":
        n = n_safe + n_unsafe
        if n * target_fpr < 3:
            out.append(f"{n} rows cannot check a flagged share of {target_fpr:g} ({n * target_fpr:.1f} rows); "
                       f"sample at least {int(np.ceil(3 / target_fpr))} messages for this target.")
        if not labelled:
            out.append("unlabelled sample: the flagged share bounds the FPR from above (at most that share of "
                       "benign traffic is flagged) but says nothing about recall; label a sample to see both.")
            return out
    if policy == "target_fpr" and n_safe * target_fpr < 3:
        need = int(np.ceil(3 / max(target_fpr, 1e-9)))
        hi = M.wilson_interval(round(n_safe * target_fpr), n_safe)[1] if n_safe else 1.0
        out.append(f"{n_safe} benign rows cannot check an FPR of {target_fpr:g}: that is "
                   f"{n_safe * target_fpr:.1f} false positive(s), and the 95% interval of such an estimate runs to "
                   f"{hi:.3f}. Label at least {need} benign messages for this target.")
    if 0 < n_unsafe < 30:
        out.append(f"only {n_unsafe} unsafe rows: recall and F1 on this sample are rough (see their intervals); "
                   "100+ unsafe messages give a usable estimate.")
    if n_unsafe == 0:
        out.append("no unsafe rows: recall cannot be estimated; only `target_fpr` and `flag_rate` can be "
                   "calibrated.")
    return out


def _fmt(m: dict | None) -> str:
    if m is None:
        return "n/a | n/a | n/a | n/a | n/a"
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    ci = lambda c: "" if not c else f" [{c[0]:.3f}, {c[1]:.3f}]"  # noqa: E731
    return f"{f(m['flag_rate'])}{ci(m['flag_ci'])} | {f(m['fpr'])}{ci(m['fpr_ci'])} | " \
           f"{f(m['recall'])}{ci(m['recall_ci'])} | {f(m['precision'])} | {f(m['f1'])}"


def report_md(r: dict) -> str:
    goal = f" (target FPR {r['target_fpr']:g})" if r["policy"] == "target_fpr" else \
        f" (flag at most {r['flag_rate']:g} of all traffic)" if r["policy"] == "flag_rate" else ""
    lines = [f"# Threshold calibration: {r['model']}", "",
             f"Sample: {', '.join(r['data'])} (sha256 {r['sha256'][:12]}): {r['n']} rows, "
             + (f"{r['n_unsafe']} unsafe, {r['n_safe']} safe" if r["labelled"] else "unlabelled")
             + (f"; {r['skipped']} bad row(s) skipped: {r['skipped_by_reason']}" if r['skipped'] else "")
             + (f"; columns ignored: {', '.join(r['ignored_columns'])}" if r.get("ignored_columns") else "") + ".",
             f"Policy: `{r['policy']}`{goal}. Scored as served ({r['precision']}).", "",
             "| threshold | value | flagged [95% CI] | FPR [95% CI] | recall [95% CI] | precision | F1 |",
             "|---|---:|---|---|---|---:|---:|",
             f"| current (from the checkpoint, {r['previous_policy']}) | {r['previous_threshold']:.4f} | "
             f"{_fmt(r['current'])} |",
             f"| new, on this sample (in-sample: optimistic) | {r['threshold']:.4f} | {_fmt(r['in_sample'])} |"]
    cf = r["cross_fitted"]
    if cf:
        lines.append(f"| new, expected on fresh traffic from this source (cross-fitted, {cf['folds']} folds x "
                     f"{cf['repeats']}; thresholds {cf['threshold_range'][0]:.3f}-{cf['threshold_range'][1]:.3f}; "
                     f"intervals: {cf['ci_method']}) | - | {_fmt(cf)} |")
    else:
        lines.append("| new, cross-fitted | - | n/a: fewer than 2 rows of a label the policy needs | | | | |")
    lines += [""] + [f"**Warning:** {w}" for w in r["warnings"]]
    if r.get("out"):
        lines += ["", f"Written: `{r['out']}` (a copy of the checkpoint with threshold {r['threshold']:.4f}; the "
                      f"original is unchanged)."]
    return "\n".join(lines) + "\n"


def _plot(y: np.ndarray | None, s: np.ndarray, r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, 1, 41)
    t = np.linspace(0, 1, 201)
    b.plot(t, [(s >= x).mean() for x in t], label="flagged")
    if y is None:
        a.hist(s, bins=bins, alpha=0.6, label=f"unlabelled ({len(s)})")
    else:
        a.hist(s[~y], bins=bins, alpha=0.6, label=f"safe ({int((~y).sum())})")
        b.plot(t, [(s[~y] >= x).mean() if (~y).any() else np.nan for x in t], label="FPR")
        if y.any():
            a.hist(s[y], bins=bins, alpha=0.6, label=f"unsafe ({int(y.sum())})")
            b.plot(t, [(s[y] >= x).mean() for x in t], label="recall")
    for ax in (a, b):
        ax.axvline(r["previous_threshold"], color="grey", ls="--", label=f"current {r['previous_threshold']:.3f}")
        ax.axvline(r["threshold"], color="black", label=f"new {r['threshold']:.3f}")
        ax.set_xlabel("unsafe score")
        ax.legend(fontsize=8)
    a.set(ylabel="rows (log scale)", yscale="log", title="scores on the sample")
    b.set(ylabel="rate", title="flagged share, FPR and recall by threshold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sha256(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)  # weights are never written in place: a hard link saves the copy
    except OSError:
        shutil.copy2(src, dst)


def write_checkpoint(src: Path, out: Path, meta: dict, record: dict, card_section: str) -> Path:
    """A copy of `src` at `out` (weights hard-linked where possible) whose guardray.json carries the new
    threshold; the model card gets a section on the calibration. Written to a temporary folder, then renamed."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(META_FILE, CARD_FILE))
    meta = dict(meta, threshold=record["threshold"], threshold_policy=record["policy"],
                target_fpr=record["target_fpr"] if record["policy"] == "target_fpr" else meta.get("target_fpr"),
                flag_rate=record["flag_rate"] if record["policy"] == "flag_rate" else meta.get("flag_rate"))
    meta["calibration"] = record
    meta["calibration_history"] = list(meta.get("calibration_history") or []) + [record]
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    card = (src / CARD_FILE).read_text() if (src / CARD_FILE).exists() else f"# {src.name}\n"
    (tmp / CARD_FILE).write_text(card.rstrip() + "\n\n" + card_section)
    tmp.rename(out)
    return out


def read_sample(paths: list[str], *, skip_bad: bool, policy: str) -> tuple[LoadResult, bool, list[str]]:
    """(rows, all labelled?, ignored columns). A sample is usually an export of logged traffic, so columns guardray
    does not know (timestamps, user ids, ...) are ignored and named in the report rather than refused, and a row
    without `id` gets FILE:LINE. The labelled rules (every policy but flag_rate) need a `label` on every row;
    flag_rate lets a row leave it out, and labels count only when every row has one. Everything else is checked as
    for training data (records.read_examples, with this as its `prepare`)."""
    labels = policy != "flag_rate"
    allowed = {f.name for f in dataclasses.fields(Example)} | {"messages"}
    seen, ignored = {"rows": 0, "unlabelled": 0}, set()

    def prepare(row, path: Path, line: int):
        seen["rows"] += 1
        if not isinstance(row, dict):
            return row  # example_from_dict names the problem
        ignored.update(set(row) - allowed)
        row = {k: v for k, v in row.items() if k in allowed}
        if row.get("label") in (None, ""):
            seen["unlabelled"] += 1
            if labels:
                raise ValueError("missing 'label' (safe or unsafe)")
            row["label"] = "safe"  # a placeholder for flag_rate, never reported
        if not row.get("id"):
            row["id"] = f"{path.name}:{line}"
        return row

    def no_labels() -> bool:
        return labels and seen["rows"] > 0 and seen["unlabelled"] == seen["rows"]
    hint = (f"{', '.join(paths)}: no row has a 'label'; `{policy}` needs labelled rows (safe / unsafe): label a "
            "sample, or use --policy flag_rate --flag-rate X on unlabelled traffic")
    try:
        loaded = read_many(paths, skip_bad=skip_bad, strict_categories=False, allow_duplicate_ids=True,
                           prepare=prepare)
    except DataError:
        if no_labels():
            raise DataError(hint) from None
        raise
    if no_labels():
        raise DataError(hint)
    if not loaded.examples:
        raise DataError(f"{', '.join(paths)}: no valid rows")
    return loaded, seen["unlabelled"] == 0, sorted(ignored)


def calibrate(model: str, data: list[str], *, policy: str | None = None, target_fpr: float | None = None,
              flag_rate: float | None = None, out: str | None = None, report_dir: str | None = None,
              skip_bad: bool = False, folds: int = FOLDS, repeats: int = REPEATS, batch_size: int = 32,
              precision: str = "auto", plots: bool = True) -> dict:
    """Calibrate `model`'s threshold on the rows of `data` (labelled; unlabelled too for `flag_rate`); returns the
    report dict (see module doc)."""
    from guardray.classifier import GuardClassifier, read_meta
    from guardray.models import resolve
    src = Path(resolve(model))
    meta = read_meta(src)
    policy = policy or meta.get("threshold_policy") or "f1_1se"
    if policy not in CALIBRATE_POLICIES:
        raise UsageError(f"--policy {policy!r}: use one of {', '.join(CALIBRATE_POLICIES)}")
    target_fpr = float(target_fpr if target_fpr is not None else meta.get("target_fpr") or 0.05)
    if not 0.0 < target_fpr < 1.0:
        raise UsageError(f"--target-fpr {target_fpr}: give a rate in (0, 1), e.g. 0.05 for 5% of benign traffic")
    flag_rate = flag_rate if flag_rate is not None else meta.get("flag_rate")
    if policy == "flag_rate" and (flag_rate is None or not 0.0 < float(flag_rate) < 1.0):
        raise UsageError(f"--policy flag_rate needs --flag-rate in (0, 1) (got {flag_rate}), e.g. 0.02 to flag at "
                         "most 2% of all traffic")
    target = float(flag_rate) if policy == "flag_rate" else target_fpr
    if out is not None:
        if Path(out).exists():
            raise UsageError(f"--out {out} exists; give a new folder (the calibrated copy is written there, the "
                             "checkpoint itself is never modified)")
        if not meta:
            raise UsageError(f"{model} has no {META_FILE}: it is not a guardray checkpoint (train one with "
                             "`guardray train`), so there is nothing to recalibrate")
    loaded, labelled, ignored = read_sample(data, skip_bad=skip_bad, policy=policy)
    ex: list[Example] = loaded.examples
    y = np.array([e.unsafe for e in ex], dtype=bool) if labelled else None
    n_unsafe, n_safe = (int(y.sum()), int((~y).sum())) if labelled else (0, len(ex))
    if labelled and n_safe == 0:
        raise DataError(f"{', '.join(data)}: no safe rows; a threshold is calibrated on benign traffic (FPR) and "
                        "on harmful traffic (recall): add labelled benign messages")
    if n_unsafe == 0 and policy not in ("target_fpr", "flag_rate"):
        raise UsageError(f"{', '.join(data)} has no unsafe rows, so `{policy}` (an F1 rule) cannot be calibrated; "
                         "add labelled unsafe messages or use --policy target_fpr")
    clf = GuardClassifier.load(str(src), precision=precision)
    s = np.asarray(clf.score([e.model_text for e in ex], batch_size=batch_size, progress=len(ex) > 500).unsafe,
                   dtype=np.float64)
    thr = choose(y if labelled else np.zeros(len(s), dtype=bool), s, policy, target)
    r = {"model": str(model), "data": [str(d) for d in data], "sha256": _sha256(data), "n": len(ex),
         "labelled": labelled, "n_unsafe": n_unsafe if labelled else None, "n_safe": n_safe if labelled else None,
         "ignored_columns": ignored, "skipped": len(loaded.skipped),
         "skipped_by_reason": dict(Counter(e.reason.split(":")[0] for e in loaded.skipped)),
         "policy": policy, "target_fpr": target_fpr, "flag_rate": float(flag_rate) if flag_rate else None,
         "precision": clf.precision, "previous_threshold": float(clf.threshold),
         "previous_policy": meta.get("threshold_policy", "default 0.5" if not meta else "unknown"),
         "threshold": float(thr), "current": rates(y, s, clf.threshold), "in_sample": rates(y, s, thr),
         "cross_fitted": expected(y, s, thr, policy, target, folds, repeats),
         "warnings": warnings_for(n_safe, n_unsafe, policy, target, labelled), "at": now()}
    md = report_md(dict(r, out=out))
    rep = Path(report_dir) if report_dir else (Path(out) if out else None)
    if out is not None:
        record = {k: r[k] for k in ("data", "sha256", "n", "labelled", "n_unsafe", "n_safe", "policy",
                                    "target_fpr", "flag_rate", "threshold", "previous_threshold",
                                    "previous_policy", "in_sample", "cross_fitted", "at")}
        write_checkpoint(src, Path(out), meta, record,
                         "## Recalibrated threshold (`guardray calibrate`)\n\nThe threshold above was replaced; "
                         "this checkpoint scores with the one below.\n\n" + md.split("\n", 2)[2])
        r["out"] = str(out)
    if rep is not None:
        rep.mkdir(parents=True, exist_ok=True)
        (rep / "calibration.md").write_text(md)
        (rep / "calibration.json").write_text(json.dumps(r, indent=2, default=str))
        if plots:
            _plot(y, s, r, rep / "calibration.png")
    return r


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="guardray calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a guardray checkpoint folder")
    p.add_argument("--data", nargs="+", required=True,
                   help="sample(s) of your traffic: JSONL / CSV / Parquet rows with text and label (flag_rate: the "
                        "label may be left out)")
    p.add_argument("--policy", choices=CALIBRATE_POLICIES, default=None,
                   help="threshold rule (default: the checkpoint's own, from guardray.json); flag_rate needs no "
                        "labels")
    p.add_argument("--target-fpr", type=float, default=None,
                   help="for --policy target_fpr: the benign share you accept flagged (default: the checkpoint's, "
                        "else 0.05)")
    p.add_argument("--flag-rate", type=float, default=None,
                   help="for --policy flag_rate: the share of all traffic you accept flagged, e.g. 0.02 (a review "
                        "queue's capacity)")
    p.add_argument("--out", default=None, help="write a calibrated copy of the checkpoint here (a new folder); "
                                               "without it the command only reports")
    p.add_argument("--report", default=None, help="folder for calibration.md / .json / .png (default: --out)")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) invalid rows instead of failing")
    p.add_argument("--folds", type=int, default=FOLDS, help="cross-fitting folds (default %(default)s)")
    p.add_argument("--repeats", type=int, default=REPEATS, help="cross-fitting shuffles (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    a = p.parse_args(argv)
    if a.folds < 2 or a.repeats < 1:
        raise UsageError("--folds must be >= 2 and --repeats >= 1")
    r = calibrate(a.model, a.data, policy=a.policy, target_fpr=a.target_fpr, flag_rate=a.flag_rate, out=a.out,
                  report_dir=a.report, skip_bad=a.skip_bad, folds=a.folds, repeats=a.repeats,
                  batch_size=a.batch_size, precision=a.precision)
    print(report_md(r), end="")
    return 0
