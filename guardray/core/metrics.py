"""Binary-classification metrics for guardrail evaluation, defined precisely and computed in numpy.

Pure: imports neither ray nor vllm. Used by `guardray.evaluate` (the `guardray eval` harness) and by the trainer's
threshold calibration. Conventions, the same everywhere:

- Labels: 1 = unsafe (the positive class), 0 = safe. Scores: higher = more likely unsafe.
- A text is flagged at threshold t when ``score >= t`` (as `GuardClassifier.predict` does).
- Tied scores are flagged together: every curve is built over the *distinct* score values, so a threshold can never
  split a group of equal scores (no dependence on row order).
- Undefined metrics are ``None``, never 0 and never NaN:
  precision is None when nothing is flagged; recall when there are no unsafe rows; FPR when there are no safe rows;
  F1 = 2TP / (2TP + FP + FN) is None only when there are no unsafe rows and nothing is flagged (otherwise it is
  defined, e.g. 0 when unsafe rows exist and none is flagged); AUPRC, ROC-AUC and recall@FPR are None unless both
  classes are present (on an all-unsafe set precision is trivially 1 and FPR has no denominator).
- AUPRC is average precision, the step-wise area ``sum_k (R_k - R_{k-1}) * P_k`` over distinct thresholds in
  decreasing order (no interpolation; equals scikit-learn's `average_precision_score`).
- ROC-AUC is the trapezoidal area under (FPR, TPR) over distinct thresholds, which equals the probability that a
  random unsafe row scores above a random safe one, ties counting one half.
- Recall at X% FPR (`recall_at_fpr`, default X = 1%) is the maximum recall over all thresholds whose FPR <= X,
  including the threshold above every score (recall 0, FPR 0). FPR = FP / n_safe, so with fewer than 1/X safe rows
  (fewer than 100 at 1%) only thresholds with zero false positives qualify: the result is then the fraction of unsafe
  rows scoring strictly above the highest-scoring safe row.

Run the unit tests with ``pytest tests/test_metrics.py``.
"""
from __future__ import annotations

import numpy as np


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} values but scores has {len(s)}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0 (safe) / 1 (unsafe), got values {sorted(set(y.tolist()))[:5]}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN/inf value(s)")
    return y.astype(np.int64), s


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def binary_metrics(y_true, scores, threshold: float) -> dict:
    """Confusion counts and precision, recall, F1, FPR, accuracy at one fixed threshold (score >= threshold)."""
    y, s = _check(y_true, scores)
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    return {
        "n": int(len(y)), "n_unsafe": tp + fn, "n_safe": fp + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fpr": _ratio(fp, fp + tn), "accuracy": _ratio(tp + tn, len(y)),
    }


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) when flagging score >= t, for each distinct score t in decreasing order."""
    order = np.argsort(-s, kind="mergesort")
    ss, ys = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]  # last index of each run of equal scores
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    return tps.astype(np.int64), fps.astype(np.int64), ss[last]


def pr_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(precision, recall, thresholds) at each distinct score, thresholds decreasing (recall non-decreasing).

    None when there are no unsafe rows (recall undefined). Plotting code may prepend (recall 0, precision 1)."""
    y, s = _check(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    tps, fps, thr = _curve(y, s)
    return tps / (tps + fps), tps / n_pos, thr


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(fpr, tpr, thresholds) starting at (0, 0) with threshold +inf; None unless both classes are present."""
    y, s = _check(y_true, scores)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    tps, fps, thr = _curve(y, s)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thr]


def auprc(y_true, scores) -> float | None:
    """Average precision (step-wise area under the PR curve); None unless both classes are present."""
    y, _ = _check(y_true, scores)
    if y.sum() == 0 or y.sum() == len(y):
        return None
    prec, rec, _ = pr_curve(y_true, scores)
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def roc_auc(y_true, scores) -> float | None:
    """Area under the ROC curve (ties count one half); None unless both classes are present."""
    c = roc_curve(y_true, scores)
    if c is None:
        return None
    fpr, tpr, _ = c
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def recall_at_fpr(y_true, scores, max_fpr: float = 0.01) -> float | None:
    """Maximum recall over thresholds with FPR <= max_fpr (see the module docstring); None unless both classes."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    c = roc_curve(y_true, scores)
    if c is None:
        return None
    fpr, tpr, _ = c
    # fpr[0] == 0 (threshold +inf) always qualifies; tpr is non-decreasing, so the max is over a prefix.
    # The small tolerance keeps e.g. 1/100 <= 0.01 true despite float rounding.
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def threshold_at_fpr(y_true, scores, max_fpr: float = 0.01) -> float | None:
    """The lowest threshold whose FPR <= max_fpr (the operating point behind `recall_at_fpr`); None unless both
    classes. May be +inf (flag nothing) when even the top score is a safe row."""
    c = roc_curve(y_true, scores)
    if c is None:
        return None
    fpr, _, thr = c
    return float(thr[fpr <= max_fpr + 1e-12][-1])


def best_f1_threshold(y_true, scores) -> tuple[float, float] | None:
    """(threshold, F1) maximising F1 over distinct scores; None when there are no unsafe rows. For calibrating a
    decision threshold on training/validation data only, never on an evaluation set."""
    c = pr_curve(y_true, scores)
    if c is None:
        return None
    prec, rec, thr = c
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
    i = int(np.argmax(f1))
    return float(thr[i]), float(f1[i])


def per_category_recall(labels, categories, flagged) -> dict[str, dict]:
    """Recall per category over unsafe rows: {cat: {"n": unsafe rows with cat, "recall": flagged fraction}}.

    `labels` 0/1, `categories` a list of category-name lists (a row counts once for each of its categories),
    `flagged` booleans at the operating threshold. Also reports, for categories carried by safe rows (e.g. XSTest's
    safe prompt types), "n_safe" and "fpr" (flagged fraction of those safe rows); keys sorted by name."""
    y = np.asarray(labels).astype(np.int64)
    f = np.asarray(flagged).astype(bool)
    if not (len(y) == len(f) == len(categories)):
        raise ValueError(f"lengths differ: labels {len(y)}, categories {len(categories)}, flagged {len(f)}")
    acc: dict[str, list[int]] = {}  # cat -> [n_unsafe, hit_unsafe, n_safe, hit_safe]
    for yi, cats, fi in zip(y, categories, f):
        for c in set(cats):
            a = acc.setdefault(c, [0, 0, 0, 0])
            k = 0 if yi == 1 else 2
            a[k] += 1
            a[k + 1] += int(fi)
    out = {}
    for c in sorted(acc):
        nu, hu, ns, hs = acc[c]
        out[c] = {"n": nu, "recall": _ratio(hu, nu)}
        if ns:
            out[c].update(n_safe=ns, fpr=_ratio(hs, ns))
    return out


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a rate (attack success rate); None for n = 0. Unlike the normal
    approximation it stays inside [0, 1] and is honest for rates near 0 with a few hundred trials."""
    if n <= 0:
        return None
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))

