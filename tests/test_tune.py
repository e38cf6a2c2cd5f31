"""Ray Tune over the ClassifierTrainer: 2 real trials (tiny encoder, 1 Ray Train worker each, ASHA), and the best
configuration comes back as a YAML that `guardray train` loads. Run: pytest tests/test_tune.py"""
import json
import random

from guardray.core.config import load_config


def test_tune_two_trials_writes_a_loadable_best_config(ray_session, seeds, tiny_encoder, tmp_path):
    from guardray.tune import run_tune
    cfg = load_config(None, ["trainer.model=tiny-encoder", "trainer.batch_size=8", "trainer.max_length=32",
                             "trainer.method=lora", "tune.num_samples=2", "tune.max_concurrent=2",
                             "tune.lr=[3e-3, 1e-5]", "tune.epochs=[2]", "tune.lora_r=[2, 4]",
                             "tune.max_length=[32]", "tune.class_weight=[balanced]", "data.val_fraction=0.25"])
    data = list(seeds)
    random.Random(1).shuffle(data)
    s = run_tune(cfg, data[:48], tmp_path / "tune")
    assert len(s["trials"]) == 2 and all(t["error"] is None for t in s["trials"])
    m = cfg.tune.metric
    assert m == "val_auprc"  # threshold-free by default
    assert all(1 <= t["epochs_run"] <= 2 and m in t["metrics"] and "val_f1" in t["metrics"] for t in s["trials"])
    assert all(t["params"]["lr"] in (3e-3, 1e-5) and t["params"]["lora_r"] in (2, 4) for t in s["trials"])
    best = load_config(s["best_config_path"])  # a config `guardray train --config` accepts
    assert best.trainer.lr == s["best_params"]["lr"] and best.trainer.lora_r == s["best_params"]["lora_r"]
    assert best.trainer.model == "tiny-encoder" and best.tune.num_samples == 2
    # the best trial is the best by the metric over what the trials reported
    saved = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert saved["best_params"] == s["best_params"]
    assert s["best_metrics"][m] >= min(t["metrics"][m] for t in s["trials"])
