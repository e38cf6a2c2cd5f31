"""Metrics on hand-computed cases (guardray.core.metrics): ties, one-class sets, recall at 1% FPR."""
import numpy as np
import pytest

from guardray.core import metrics as M

# y: 1 unsafe, 0 safe. Distinct thresholds, decreasing: 0.9 (tp1 fp0), 0.8 (2, 0), 0.7 (2, 1), 0.6 (3, 1), 0.2 (3, 2)
Y = [1, 1, 0, 1, 0]
S = [0.9, 0.8, 0.7, 0.6, 0.2]


def test_binary_metrics_at_fixed_threshold():
    m = M.binary_metrics(Y, S, 0.65)  # flags 0.9, 0.8, 0.7 -> tp 2, fp 1, fn 1, tn 1
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(0.5)
    assert (m["n"], m["n_unsafe"], m["n_safe"]) == (5, 3, 2)
    # score == threshold is flagged
    assert M.binary_metrics(Y, S, 0.7)["fp"] == 1 and M.binary_metrics(Y, S, 0.7000001)["fp"] == 0


def test_curves_auprc_rocauc_hand_computed():
    prec, rec, thr = M.pr_curve(Y, S)
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.7, 0.6, 0.2])
    np.testing.assert_allclose(prec, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(rec, [1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert M.auprc(Y, S) == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 * 3 / 4)  # 11/12
    assert M.roc_auc(Y, S) == pytest.approx(5 / 6)  # 5 of the 6 (unsafe, safe) pairs ordered correctly
    # 2 safe rows: FPR <= 1% means no false positive, so only thresholds 0.9 and 0.8 qualify
    assert M.recall_at_fpr(Y, S) == pytest.approx(2 / 3)
    assert M.threshold_at_fpr(Y, S) == pytest.approx(0.8)
    assert M.recall_at_fpr(Y, S, max_fpr=0.5) == pytest.approx(1.0)  # one FP allowed -> threshold 0.6


def test_ties_are_flagged_together_regardless_of_row_order():
    y, s = [1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]
    for perm in ([0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0]):
        yy, ss = [y[i] for i in perm], [s[i] for i in perm]
        prec, rec, thr = M.pr_curve(yy, ss)
        np.testing.assert_allclose(thr, [0.9, 0.5, 0.1])  # one point for the tied 0.5s
        np.testing.assert_allclose(prec, [1, 2 / 3, 1 / 2])
        assert M.auprc(yy, ss) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
        assert M.roc_auc(yy, ss) == pytest.approx(3.5 / 4)  # the tied pair counts one half
        # the tied unsafe row cannot be had without the tied safe row
        assert M.recall_at_fpr(yy, ss) == pytest.approx(0.5)
    assert M.roc_auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)
    assert M.auprc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)


def test_all_unsafe_set_has_no_fpr_auprc_auc():
    y, s = [1, 1, 1], [0.2, 0.6, 0.9]
    m = M.binary_metrics(y, s, 0.5)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(0.8)
    assert m["fpr"] is None
    assert M.auprc(y, s) is None and M.roc_auc(y, s) is None and M.recall_at_fpr(y, s) is None
    assert M.pr_curve(y, s) is not None and M.roc_curve(y, s) is None


def test_all_safe_set_and_nothing_flagged():
    m = M.binary_metrics([0, 0], [0.7, 0.1], 0.5)
    assert m["recall"] is None and m["precision"] == 0.0 and m["f1"] == 0.0 and m["fpr"] == 0.5
    m = M.binary_metrics([0, 0], [0.4, 0.1], 0.5)
    assert m["precision"] is None and m["f1"] is None and m["fpr"] == 0.0
    assert M.pr_curve([0, 0], [0.4, 0.1]) is None and M.auprc([0, 0], [0.4, 0.1]) is None
    m = M.binary_metrics([1, 0], [0.1, 0.2], 0.5)  # unsafe row missed, nothing flagged: F1 defined as 0
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0
    m = M.binary_metrics([], [], 0.5)
    assert m["n"] == 0 and all(m[k] is None for k in ("precision", "recall", "f1", "fpr", "accuracy"))


def test_recall_at_1pct_fpr_counts_false_positives_exactly():
    # 150 safe rows: 1 FP is 0.67% FPR (allowed), 2 FPs 1.33% (not)
    pos = [0.99, 0.98, 0.97, 0.85, 0.85, 0.5, 0.5, 0.5, 0.5, 0.5]
    neg = [0.9, 0.8] + [0.1] * 148
    y, s = [1] * 10 + [0] * 150, pos + neg
    assert M.recall_at_fpr(y, s) == pytest.approx(0.5)  # threshold 0.85: flags the 0.9 safe row only
    assert M.recall_at_fpr(y, s, max_fpr=0.0) == pytest.approx(0.3)
    # exactly 100 safe rows: 1 FP is exactly 1% and qualifies (float rounding does not exclude it)
    y2, s2 = [1, 1] + [0] * 100, [0.9, 0.7] + [0.8] + [0.1] * 99
    assert M.recall_at_fpr(y2, s2) == pytest.approx(1.0)
    # 99 safe rows: any FP is > 1%, so only the unsafe row above the top safe row counts
    y3, s3 = [1, 1] + [0] * 99, [0.9, 0.7] + [0.8] + [0.1] * 98
    assert M.recall_at_fpr(y3, s3) == pytest.approx(0.5)
    # the top score is a safe row: nothing qualifies except flagging nothing
    assert M.recall_at_fpr([0, 1], [0.9, 0.5]) == 0.0 and M.threshold_at_fpr([0, 1], [0.9, 0.5]) == np.inf


def test_matches_sklearn_on_random_scores_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) * 0.5 + y * 0.3, 2)  # rounding makes many ties
    assert M.auprc(y, s) == pytest.approx(average_precision_score(y, s))
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_best_f1_threshold_and_bad_input():
    t, f1 = M.best_f1_threshold(Y, S)
    assert t == pytest.approx(0.6) and f1 == pytest.approx(2 * 0.75 / 1.75)
    with pytest.raises(ValueError, match="0 \\(safe\\)"):
        M.binary_metrics([2, 0], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        M.auprc([1, 0], [float("nan"), 0.2])
    with pytest.raises(ValueError, match="scores has 1"):
        M.roc_auc([1, 0], [0.3])


def test_per_category_recall():
    labels = [1, 1, 1, 0, 0]
    cats = [["hate", "violence"], ["hate"], ["sexual"], ["homonyms"], ["homonyms"]]
    flagged = [True, False, True, True, False]
    out = M.per_category_recall(labels, cats, flagged)
    assert out["hate"] == {"n": 2, "recall": 0.5}
    assert out["violence"] == {"n": 1, "recall": 1.0} and out["sexual"] == {"n": 1, "recall": 1.0}
    assert out["homonyms"] == {"n": 0, "recall": None, "n_safe": 2, "fpr": 0.5}
    assert list(out) == sorted(out)
