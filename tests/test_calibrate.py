"""`guardray calibrate` (guardray.calibrate): a threshold set on a labelled sample of the user's own traffic, a
calibrated copy of the checkpoint that loads and serves with it, the original untouched, cross-fitted estimates,
and bad input refused with the field and the fix."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from guardray.calibrate import calibrate, cross_fitted, report_md, warnings_for
from guardray.classifier import GuardClassifier
from guardray.cli import main as guardray_main
from guardray.core.records import DataError
from guardray.errors import UsageError

WORDS = ["garden", "invoice", "poem", "weather", "kettle", "router", "violin", "harbour", "pepper", "ladder",
         "tiger", "candle", "meeting", "bicycle", "glacier", "tax", "puzzle", "orchid", "laptop", "river"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_encoder):
    """The tiny random encoder as a guardray checkpoint (calibrated threshold 0.5, best_f1)."""
    d = tmp_path_factory.mktemp("cal") / "ckpt"
    shutil.copytree(tiny_encoder, d)
    (d / "guardray.json").write_text(json.dumps({"threshold": 0.5, "threshold_policy": "best_f1"}))
    (d / "README.md").write_text("# tiny\n")
    return d


@pytest.fixture(scope="module")
def sample(ckpt, tmp_path_factory):
    """200 texts labelled by the tiny model's own score ranking (top 40% unsafe) with 10 labels flipped: a sample
    on which the best thresholds are known to lie inside the score range."""
    texts = [f"{a} {b} {i}" for i, (a, b) in enumerate((a, b) for a in WORDS for b in WORDS[::2])][:200]
    s = GuardClassifier.load(str(ckpt), precision="fp32").score(texts).unsafe
    unsafe = s >= np.quantile(s, 0.6)
    unsafe[np.random.default_rng(0).choice(len(texts), 10, replace=False)] ^= True
    rows = [{"id": f"r{i}", "text": t, "label": "unsafe" if u else "safe"} for i, (t, u) in enumerate(zip(texts,
                                                                                                            unsafe))]
    path = tmp_path_factory.mktemp("sample") / "traffic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, np.asarray(s), unsafe


def _digest(folder: Path) -> dict:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_target_fpr_copy_loads_with_the_new_threshold_and_the_original_is_untouched(ckpt, sample, tmp_path):
    path, s, unsafe = sample
    before = _digest(ckpt)
    out = tmp_path / "calibrated"
    r = calibrate(str(ckpt), [str(path)], policy="target_fpr", target_fpr=0.1, out=str(out), precision="fp32")
    assert _digest(ckpt) == before  # the checkpoint it started from is never modified
    assert r["in_sample"]["fpr"] <= 0.1 and r["in_sample"]["recall"] > 0.5
    assert ((s >= r["threshold"]) & ~unsafe).sum() / (~unsafe).sum() == pytest.approx(r["in_sample"]["fpr"])
    loaded = GuardClassifier.load(str(out), precision="fp32")
    assert loaded.threshold == pytest.approx(r["threshold"]) != pytest.approx(0.5)
    meta = json.loads((out / "guardray.json").read_text())
    assert meta["threshold_policy"] == "target_fpr" and meta["target_fpr"] == 0.1
    assert meta["calibration"]["previous_threshold"] == 0.5 and len(meta["calibration_history"]) == 1
    assert meta["calibration"]["n"] == 200 and meta["calibration"]["sha256"] == r["sha256"]
    assert "Recalibrated threshold" in (out / "README.md").read_text()
    assert (out / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    for f in ("calibration.md", "calibration.json", "calibration.png"):
        assert (out / f).stat().st_size > 0
    # the scores the copy gives are the original's: only the decision moved
    np.testing.assert_allclose(loaded.score(["garden poem 3"]).unsafe,
                               GuardClassifier.load(str(ckpt), precision="fp32").score(["garden poem 3"]).unsafe)


def test_default_policy_is_the_checkpoints_own_and_report_only_writes_nothing(ckpt, sample, tmp_path):
    path, s, unsafe = sample
    r = calibrate(str(ckpt), [str(path)], precision="fp32")
    assert r["policy"] == "best_f1" and "out" not in r and not list(tmp_path.iterdir())
    cuts = np.unique(s)
    f1 = [2 * ((s >= c) & unsafe).sum() / ((s >= c).sum() + unsafe.sum()) for c in cuts]
    assert r["in_sample"]["f1"] == pytest.approx(max(f1))
    cf = r["cross_fitted"]
    assert cf["tp"] + cf["fn"] == pytest.approx(unsafe.sum())
    assert cf["fp"] + cf["tn"] == pytest.approx(200 - unsafe.sum())
    assert cf["f1"] <= r["in_sample"]["f1"] + 1e-9  # out-of-fold is never better than the in-sample optimum here


def test_cross_fitting_on_separable_and_on_benign_only_samples():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(60, bool), np.zeros(140, bool)]
    s = np.where(y, rng.uniform(0.7, 1.0, 200), rng.uniform(0.0, 0.3, 200))
    cf = cross_fitted(y, s, "f1_1se", 0.05)
    assert cf["recall"] == 1.0 and cf["fpr"] == 0.0 and cf["folds"] == 5
    benign = cross_fitted(np.zeros(300, bool), rng.uniform(size=300), "target_fpr", 0.1)
    assert benign["recall"] is None and 0.0 < benign["fpr"] <= 0.2  # held-out FPR near the target
    assert cross_fitted(np.r_[True, np.zeros(9, bool)], rng.uniform(size=10), "best_f1", 0.05) is None


def test_sample_size_warnings_name_what_to_label():
    w = warnings_for(100, 200, "target_fpr", 0.01)
    assert len(w) == 1 and "at least 300 benign" in w[0]
    assert any("only 12 unsafe" in x for x in warnings_for(1000, 12, "best_f1", 0.05))
    assert warnings_for(1000, 300, "target_fpr", 0.01) == []


def test_bad_input_is_refused_with_the_fix(ckpt, sample, tmp_path, tiny_encoder, capsys):
    path, _, _ = sample
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + '{"id": "x1", "text": "hi", "label": "maybe"}\n{"id": "x2", "label": "safe"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:201: unknown label 'maybe'"):
        calibrate(str(ckpt), [str(bad)], precision="fp32")
    r = calibrate(str(ckpt), [str(bad)], skip_bad=True, precision="fp32")
    assert r["n"] == 200 and r["skipped"] == 2 and sum(r["skipped_by_reason"].values()) == 2
    only_unsafe = tmp_path / "u.jsonl"
    only_unsafe.write_text('{"id": "1", "text": "a", "label": "unsafe"}\n{"id": "2", "text": "b", "label": "unsafe"}\n')
    with pytest.raises(DataError, match="no safe rows"):
        calibrate(str(ckpt), [str(only_unsafe)])
    only_safe = tmp_path / "s.jsonl"
    only_safe.write_text('{"id": "1", "text": "a", "label": "safe"}\n{"id": "2", "text": "b", "label": "safe"}\n')
    with pytest.raises(UsageError, match="use --policy target_fpr"):
        calibrate(str(ckpt), [str(only_safe)], policy="f1_1se")
    with pytest.raises(UsageError, match="give a new folder"):
        calibrate(str(ckpt), [str(path)], out=str(tmp_path))
    with pytest.raises(UsageError, match="not a guardray checkpoint"):
        calibrate(tiny_encoder, [str(path)], out=str(tmp_path / "new"))
    with pytest.raises(UsageError, match="--target-fpr 5.0"):
        calibrate(str(ckpt), [str(path)], policy="target_fpr", target_fpr=5.0)
    # through the command line: a one-paragraph error and exit code 2, no trace
    assert guardray_main(["calibrate", "--model", str(ckpt), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "guardray: error:" in err and "--skip-bad" in err and "Traceback" not in err
    assert guardray_main(["calibrate", "--model", str(ckpt), "--data", str(path), "--policy", "target_fpr",
                          "--target-fpr", "0.2", "--precision", "fp32"]) == 0
    assert "expected on fresh traffic" in capsys.readouterr().out


def test_the_target_fpr_interval_covers_the_true_fpr_whatever_the_score_distribution():
    """Benign scores uniform on [0, 1] (any continuous distribution maps onto it), so a threshold t has true FPR
    1 - t: the order-statistic interval around a threshold chosen on 150 benign rows must cover it ~95% of draws."""
    from guardray.calibrate import order_statistic_interval
    from guardray.core.calibration import choose_threshold
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(400):
        s = rng.uniform(size=150)
        t = choose_threshold(np.zeros(150, int), s, "target_fpr", 0.05)
        lo, hi = order_statistic_interval(int((s >= t).sum()), 150)
        hits += lo <= 1 - t <= hi
    assert 0.9 <= hits / 400 <= 0.99
    assert order_statistic_interval(0, 100)[0] == 0.0 and order_statistic_interval(100, 100)[1] == 1.0


def test_flag_rate_needs_no_labels_and_caps_the_share_flagged(ckpt, sample, tmp_path):
    """Logged traffic without labels or ids: the threshold flags at most the asked share of it, the copy records
    the rule, and recalibrating the copy without --policy keeps it."""
    path, s, _ = sample
    logs = tmp_path / "logs.jsonl"
    logs.write_text("".join(json.dumps({"text": json.loads(x)["text"]}) + "\n"
                            for x in path.read_text().splitlines()))
    out = tmp_path / "two-pct"
    r = calibrate(str(ckpt), [str(logs)], policy="flag_rate", flag_rate=0.02, out=str(out), precision="fp32")
    assert not r["labelled"] and r["n"] == 200 and r["n_unsafe"] is None
    assert r["in_sample"]["flagged"] == (s >= r["threshold"]).sum() <= 4 and r["in_sample"]["fpr"] is None
    assert r["cross_fitted"]["ci_method"].startswith("order statistic") and r["cross_fitted"]["recall"] is None
    assert any("unlabelled sample" in w for w in r["warnings"])
    meta = json.loads((out / "guardray.json").read_text())
    assert meta["threshold_policy"] == "flag_rate" and meta["flag_rate"] == 0.02
    again = calibrate(str(out), [str(logs)], precision="fp32")
    assert again["policy"] == "flag_rate" and again["threshold"] == pytest.approx(r["threshold"])
    assert "unlabelled" in (out / "calibration.md").read_text()
    # a labelled sample under flag_rate: the share is capped and FPR / recall are reported beside it
    lab = calibrate(str(ckpt), [str(path)], policy="flag_rate", flag_rate=0.3, precision="fp32")
    assert lab["labelled"] and lab["in_sample"]["flag_rate"] <= 0.3 and lab["in_sample"]["recall"] is not None
    with pytest.raises(UsageError, match="needs --flag-rate"):
        calibrate(str(ckpt), [str(logs)], policy="flag_rate")
    with pytest.raises(DataError, match=r"logs2.jsonl:2: missing or empty 'text'"):
        (tmp_path / "logs2.jsonl").write_text('{"text": "hello"}\n{"text": ""}\n')
        calibrate(str(ckpt), [str(tmp_path / "logs2.jsonl")], policy="flag_rate", flag_rate=0.1)
    with pytest.raises(DataError, match="no row has a 'label'.*--policy flag_rate"):
        calibrate(str(ckpt), [str(logs)], policy="target_fpr")  # the labelled rules still need labels


def test_a_csv_export_with_extra_columns_is_read_and_the_columns_named(ckpt, sample, tmp_path):
    """Logged traffic is usually an export: extra columns are ignored (and named), ids are optional; the labelled
    rules still refuse a row without a label, naming it."""
    import csv
    path, _, _ = sample
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    logs, labelled = tmp_path / "logs.csv", tmp_path / "labelled.csv"
    with logs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "user_id", "text"])
        w.writerows([[f"2026-12-07T10:{i % 60:02d}", f"u{i}", r["text"]] for i, r in enumerate(rows)])
    with labelled.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "annotator"])
        w.writerows([[r["text"], r["label"], "ana"] for r in rows])
    r = calibrate(str(ckpt), [str(logs)], policy="flag_rate", flag_rate=0.1, precision="fp32")
    assert r["n"] == 200 and not r["labelled"] and r["ignored_columns"] == ["timestamp", "user_id"]
    assert "columns ignored: timestamp, user_id" in report_md(r)
    lab = calibrate(str(ckpt), [str(labelled)], policy="target_fpr", target_fpr=0.1, precision="fp32")
    assert lab["labelled"] and lab["n_unsafe"] == sum(x["label"] == "unsafe" for x in rows)
    assert lab["ignored_columns"] == ["annotator"]
    part = tmp_path / "part.csv"
    part.write_text('text,label\nhello there,safe\nsome text,\n')
    with pytest.raises(DataError, match=r"part.csv:3: missing 'label'"):
        calibrate(str(ckpt), [str(part)], policy="target_fpr")
