"""Ray Tune hyper-parameter search over the ClassifierTrainer (ASHA), writing the best config back as YAML.

    guardray tune --config configs/tune.yaml [--data FILE ...] [--out DIR] [key=value ...]
    ray job submit --working-dir . -- python jobs/tune.py configs/tune.yaml

Search space (the `tune` block, each a list of choices): lr, epochs, lora_r (only with trainer.method=lora),
max_length, class_weight, pooling, head_epochs. `tune.num_samples` trials run, `tune.max_concurrent` at a time; each trial is a full Ray
Train run (`trainer.num_workers` workers) whose per-epoch validation metrics reach Tune through
`TuneReportCallback`, so the ASHA scheduler stops weak trials after their first epochs (grace period 1 epoch,
max_t = the largest epochs choice). Every trial uses the same validation split, cut from the training data once.
The best trial's trainer block is merged into the input config and written to `<out>/best.yaml`; `guardray train
--config <out>/best.yaml` trains the final model with it. Trials do not export checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from guardray.core.config import Config, dump_config
from guardray.core.records import Example

SEARCHED = ("lr", "epochs", "lora_r", "max_length", "class_weight", "pooling", "head_epochs")


def search_space(cfg: Config) -> dict:
    """{trainer field: tune.choice([...])} from the tune block; lora_r only when it matters (method=lora)."""
    from ray import tune
    t = cfg.tune
    space = {"lr": t.lr, "epochs": t.epochs, "max_length": t.max_length, "class_weight": t.class_weight,
             "pooling": t.pooling, "head_epochs": t.head_epochs}
    if cfg.trainer.method == "lora":
        space["lora_r"] = t.lora_r
    for k, v in space.items():
        if not v:
            from guardray.errors import UsageError
            raise UsageError(f"tune.{k}: empty list of choices; give at least one value")
    from guardray.classifier import POOLINGS
    if bad := [p for p in t.pooling if p not in POOLINGS]:
        from guardray.errors import UsageError
        raise UsageError(f"tune.pooling: {bad[0]!r} is not a pooling; use {' or '.join(POOLINGS)}")
    pick = tune.grid_search if cfg.tune.grid else tune.choice
    return {k: pick(list(v)) for k, v in space.items()}


def _trial(params: dict, *, cfg: Config, train: list[Example], val: list[Example], storage: str) -> None:
    """One Tune trial: a Ray Train run with the sampled trainer fields; metrics flow to Tune each epoch."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from guardray.core.taxonomy import load_policy
    from guardray.trainer import ClassifierTrainer
    tcfg = dataclasses.replace(cfg.trainer, **params, early_stopping_patience=0)  # ASHA does the stopping
    ctx = tune.get_context()
    ClassifierTrainer(tcfg, cfg.resources, storage_path=storage, name=f"trial-{ctx.get_trial_id()}",
                      seed=cfg.run.seed, progress=False, export=False,
                      callbacks=[TuneReportCallback()], policy=load_policy(cfg.policy)).fit(train, val)


def run_tune(cfg: Config, train: list[Example], out_dir) -> dict:
    """ASHA search over the tune block's choices; returns {"best_config_path", "best_params", "best_metrics",
    "trials": [{"params", "metrics", "epochs_run"}], "seconds"} and writes best.yaml + trials.json to out_dir."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from guardray.ray_utils import init_ray
    from guardray.selection import select_training
    from guardray.core.splits import check_data, split_validation
    if not ray.is_initialized():
        init_ray(cfg.run.ray_address)
    t0 = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train, val = split_validation(list(train), cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    check_data(train)
    if not val:
        from guardray.errors import UsageError
        raise UsageError("tuning needs a validation split: set data.val_fraction > 0")
    train, _ = select_training(cfg.trainer, train, seed=cfg.run.seed, resources=cfg.resources)
    t = cfg.tune
    max_t = max(t.epochs)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=1, reduction_factor=2)
    trainable = tune.with_parameters(_trial, cfg=cfg, train=train, val=val, storage=str(out / "ray_train"))
    # the trial function only drives a Ray Train run; the Train workers hold the CPUs/GPUs
    trainable = tune.with_resources(trainable, {"cpu": 0.01})  # Tune rejects a resource-free trial
    tuner = tune.Tuner(
        trainable, param_space=search_space(cfg),
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, scheduler=scheduler, num_samples=t.num_samples,
                                    max_concurrent_trials=t.max_concurrent),
        run_config=tune.RunConfig(name="tune", storage_path=str(out / "ray_tune"), verbose=1))
    grid = tuner.fit()
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        trials.append({"params": {k: r.config[k] for k in r.config if k in SEARCHED},
                       "metrics": {k: v for k, v in (r.metrics or {}).items()
                                   if k.startswith(("val_", "train_loss", "epoch", "threshold"))},
                       "epochs_run": int(len(df)) if df is not None else 0,
                       "error": str(r.error) if r.error else None})
    ok = [x for x in trials if x["error"] is None and _finite(x["metrics"].get(t.metric))]
    if not ok:
        raise RuntimeError(f"no Tune trial reported a finite {t.metric!r}: "
                           + "; ".join(str(x["error"]) for x in trials))
    best = grid.get_best_result(metric=t.metric, mode=t.mode, scope="all")
    params = {k: best.config[k] for k in best.config if k in SEARCHED}
    best_cfg = cfg.replace(trainer=dataclasses.replace(cfg.trainer, **params))
    path = dump_config(best_cfg, out / "best.yaml")
    best_metrics = {k: v for k, v in (best.metrics or {}).items() if k.startswith(("val_", "threshold", "epoch"))}
    summary = {"best_config_path": str(path), "best_params": params, "best_metrics": best_metrics,
               "metric": t.metric, "mode": t.mode, "trials": trials, "seconds": round(time.perf_counter() - t0, 1)}
    (out / "trials.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def cli(argv: list[str]) -> int:
    from guardray.core.config import load_config
    from guardray.trainer import load_training_data
    ap = argparse.ArgumentParser(prog="guardray tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="YAML config with trainer and tune blocks")
    ap.add_argument("--data", nargs="+", default=None, metavar="FILE",
                    help="Example files to tune on; default: seeds + data.extra_train")
    ap.add_argument("--out", default=None, help="output folder (default: runs/NAME/tune)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. tune.num_samples=8")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    train = load_training_data(cfg, args.data)
    s = run_tune(cfg, train, args.out or cfg.run_dir / "tune")
    print(json.dumps({k: s[k] for k in ("best_config_path", "best_params", "best_metrics")}, default=str))
    print(f"train the final model with: guardray train --config {s['best_config_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
