"""Decision-threshold calibration on a validation split: pure numpy, no Ray.

    thr = choose_threshold(y_true, scores, policy="best_f1")                   # max F1
    thr = choose_threshold(y_true, scores, policy="target_fpr", target_fpr=0.05)  # max recall with FPR <= 5%
    thr = choose_threshold(y_true, scores, policy="f1_1se")  # the highest threshold within one SE of max F1

A text is called unsafe when `score >= threshold`. Candidate cuts are the distinct scores, so tied scores always
fall on the same side (a cut can never split a tie). The returned threshold sits halfway between the lowest score
called unsafe and the next lower distinct score, so validation predictions are exactly those of the chosen cut while
the margin on both sides is as wide as possible. Ties between cuts with equal F1 go to the higher threshold (fewer
positives, lower FPR). The trainer stores the result in the checkpoint (`guardray.json`), and `guardray eval` and
serving use it by default. The metrics at the chosen threshold come from guardray.core.metrics (binary_metrics);
unlike its `best_f1_threshold`, which returns the cut score itself, these thresholds sit in the gap between scores.
"""
from __future__ import annotations

import numpy as np

POLICIES = ("f1_1se", "best_f1", "target_fpr")
BOOTSTRAP = 200  # resamples for the standard error of the best F1 (f1_1se)


def _cuts(y_true, scores):
    """Distinct scores (descending) and the TP/FP counts when everything >= each of them is called unsafe."""
    y = np.asarray(y_true, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but scores has {s.size}")
    if s.size == 0:
        raise ValueError("cannot calibrate a threshold on an empty validation split")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # last index of each run of equal scores: the cut there includes the whole tie
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    return s[last], tp[last], fp[last], int(y.sum()), int((~y).sum())


def _f1(tp, fp, fn):
    """F1 of the unsafe class from confusion counts (arrays or scalars); 0 where nothing is flagged or positive."""
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def _between(distinct: np.ndarray, k: int) -> float:
    """Threshold that calls distinct[0..k] unsafe and distinct[k+1..] safe, halfway between them."""
    if k + 1 < distinct.size:
        return float((distinct[k] + distinct[k + 1]) / 2.0)
    return float(distinct[k])  # the cut includes every example: the lowest score itself


def above_all(scores) -> float:
    """A threshold that calls every given score safe."""
    return float(np.nextafter(np.max(scores), np.inf))


def best_f1_threshold(y_true, scores) -> float:
    """Threshold that maximises F1 of the unsafe class on (y_true, scores); ties -> the higher threshold.

    With no positive example F1 is 0 at every cut; the threshold then calls nothing unsafe."""
    distinct, tp, fp, pos, _ = _cuts(y_true, scores)
    if pos == 0:
        return above_all(scores)
    k = int(np.argmax(_f1(tp, fp, pos - tp)))  # first max = highest threshold among ties (distinct is descending)
    return _between(distinct, k)


def f1_1se_threshold(y_true, scores, *, resamples: int = BOOTSTRAP, seed: int = 0) -> float:
    """The one-standard-error rule (Breiman et al. 1984; Hastie et al., ESL 7.10) applied to the threshold: the
    highest threshold whose validation F1 is within one bootstrap standard error of the best F1.

    The best-F1 cut of a few hundred noisy validation examples is itself noisy, and F1 is flat near its maximum, so
    `best_f1` often lands on a low threshold that flags many more benign texts for a gain in F1 smaller than its own
    sampling error. Among the cuts the validation set cannot tell apart from the best, this one flags the fewest.
    The SE is the standard deviation of the best cut's F1 over `resamples` bootstrap resamples of the examples
    (seeded: the same inputs give the same threshold). With no positive example, nothing is called unsafe."""
    distinct, tp, fp, pos, _ = _cuts(y_true, scores)
    if pos == 0:
        return above_all(scores)
    f1 = _f1(tp, fp, pos - tp)
    best = int(np.argmax(f1))
    y = np.asarray(y_true, dtype=bool).ravel()
    pred = np.asarray(scores, dtype=np.float64).ravel() >= distinct[best]
    w = np.random.default_rng(seed).multinomial(y.size, np.full(y.size, 1.0 / y.size), size=resamples)
    se = float(np.std(_f1(w @ (pred & y), w @ (pred & ~y), w @ (~pred & y)), ddof=1)) if resamples > 1 else 0.0
    # cuts run from the highest threshold down: the first within one SE of the best is the highest such threshold
    k = int(np.nonzero(f1 >= f1[best] - se - 1e-12)[0][0])
    return _between(distinct, k)


def fpr_threshold(y_true, scores, target_fpr: float) -> float:
    """Lowest threshold whose FPR on (y_true, scores) is <= target_fpr, i.e. maximal recall under that FPR.

    If even the highest-scoring cut breaks the target, nothing is called unsafe. With no negative example the FPR
    is 0 everywhere and every example is called unsafe."""
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    distinct, tp, fp, _, neg = _cuts(y_true, scores)
    fpr = fp / neg if neg else np.zeros_like(fp, dtype=np.float64)
    ok = np.nonzero(fpr <= target_fpr + 1e-12)[0]
    if ok.size == 0:
        return above_all(scores)
    # fp is non-decreasing along the cuts, so the allowed cuts are a prefix; take its last (lowest) cut
    k = int(ok[-1])
    return _between(distinct, k)


def choose_threshold(y_true, scores, policy: str = "f1_1se", target_fpr: float = 0.05) -> float:
    if policy == "f1_1se":
        return f1_1se_threshold(y_true, scores)
    if policy == "best_f1":
        return best_f1_threshold(y_true, scores)
    if policy == "target_fpr":
        return fpr_threshold(y_true, scores, target_fpr)
    raise ValueError(f"unknown threshold policy {policy!r}; use one of {POLICIES}")
