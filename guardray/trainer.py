"""ClassifierTrainer: fine-tune the guardrail classifier with Ray Train and write a Hugging Face checkpoint.

    guardray train --config configs/train.yaml                       # packaged seeds + data.extra_train
    guardray train --config configs/train.yaml --data a.jsonl b.parquet --out runs/x/classifier trainer.lr=3e-5
    ray job submit --working-dir . -- python jobs/train.py configs/train.yaml

What it does, in order (`train_classifier`):
1. Validation split taken from the training data (`val_fraction`, grouped by root seed so a paraphrase never sits
   on the other side of its seed, stratified by label). Evaluation sets (../shared/data) are never read here.
2. Optional data selection on the training split: `selection: all | random | s2l` with `selection_budget`
   (S2L: guardray.selection + guardray.core.s2l).
3. Ray Train `TorchTrainer` (DDP: gloo on CPU, NCCL on GPU; `trainer.num_workers` workers with
   `resources.trainer_cpus_per_worker` / `trainer_gpus_per_worker`). The backbone is any
   `AutoModelForSequenceClassification` (encoder or decoder; default `minilm`) with guardray's 16 sigmoid outputs:
   output 0 the binary unsafe head, 1..15 the multi-label category head (guardray.classifier). Full fine-tune or
   LoRA (peft). Loss = BCE(unsafe) [pos_weight = n_safe/n_unsafe with class_weight=balanced]
   + category_loss_weight * BCE(categories) over unsafe rows that carry categories. With `head_epochs` the head is
   first fitted alone on the frozen encoder's features (LP-FT); with `wise_alpha` < 1 every epoch validates (and
   keeps) the encoder interpolated back towards the backbone (WiSE-FT); guardray.train_steps.
4. Each epoch every worker scores its shard of the validation split, the shards are gathered, the decision threshold
   is calibrated (best F1, or max recall at a target FPR; guardray.core.calibration) and the metrics are reported to
   Ray Train with a checkpoint (weights + optimizer state). Early stopping on validation AUPRC.
   A failed worker group restarts from the last epoch (`trainer.max_failures`), and re-running the same command after
   a crash resumes there too: the Ray Train run is named by a hash of the config and data.
The data maths (targets, the validation split, class weights) are `guardray.core.splits`; the model, loss and
epoch steps `guardray.train_steps`; this module is the Ray Train role around them, the export and the CLI.

5. The best epoch's weights (LoRA merged) are saved with `save_pretrained` (safetensors) into `out_dir` with
   `guardray.json` (threshold, policy, how to score: long texts and pooling, validation metrics, data summary,
   config) and a model card (README.md). `GuardClassifier.load(out_dir)` scores it as it was calibrated; a
   `trainer.pooling=cls` checkpoint also loads in `transformers.pipeline("text-classification", top_k=None)`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from guardray.classifier import LABEL_NAMES, META_FILE
from guardray.core.config import Config, ResourcesConfig, TrainerConfig, to_dict
from guardray.core.records import DataError, Example
from guardray.core.taxonomy import BUILTIN, Policy
# the data maths (guardray.core.splits) and the torch steps (guardray.train_steps) live in their own modules, which
# guardray.selection uses without importing this one (no import cycle); split_validation is re-exported here
from guardray.core.splits import (category_pos_weights, check_data, data_summary, example_rows, pos_weight,
                                  split_validation)
from guardray.train_steps import (build_model, check_warm_start, encode, epoch_batches, load_trainable,
                                  make_optimizer, predict, scoring_length, train_epoch, trainable_state, val_metrics,
                                  fit_head, WiseFT)

TRAIN_STATE = "train_state.json"  # inside the final Ray Train checkpoint: history and best epoch
MONITOR = "val_auprc"  # early stopping and best-epoch choice (threshold-free, so calibration noise does not leak)


@dataclass
class TrainResult:
    path: str  # the checkpoint folder (HF format + guardray.json + README.md)
    threshold: float  # calibrated decision threshold
    metrics: dict  # validation metrics of the kept (best) epoch
    history: list[dict] = field(default_factory=list)  # one dict per epoch, as reported to Ray Train


# ---------------------------------------------------------------- the run's name (driver side, no Ray)

def run_name(cfg: TrainerConfig, train: list[Example], val: list[Example], seed: int) -> str:
    """Stable Ray Train run name: the same config + data + seed resumes the same run after a crash."""
    h = hashlib.sha256()
    h.update(json.dumps(to_dict(cfg), sort_keys=True).encode())
    h.update(str(seed).encode())
    for part, exs in (("train", train), ("val", val)):
        h.update(part.encode())
        for e in exs:
            h.update(f"{e.id}\x00{e.label}\x00{','.join(e.categories)}\x00{e.text}\x01".encode())
    return "classifier-" + h.hexdigest()[:16]


# ---------------------------------------------------------------- the Ray Train worker loop

def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker. `config` is the train_loop_config built by ClassifierTrainer."""
    import numpy as np
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    cfg = TrainerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["trainer"].items()})
    seed = config["seed"]
    data = ray.get(config["data"]) if isinstance(config["data"], ray.ObjectRef) else config["data"]
    train_rows, val_rows = data["train"], data["val"]
    pw, cw, cpw = config["pos_weight"], cfg.category_loss_weight, config.get("cat_pos_weight")
    device = ray.train.torch.get_device()

    model, tok = build_model(cfg, seed, label_names=config.get("label_names") or LABEL_NAMES)
    feats = encode(tok, train_rows, cfg.max_length)
    # validation scores what deployment scores (GuardClassifier: canonical text, one pass up to score_max_length), so
    # the threshold calibrated on it holds there
    if cfg.normalize:
        from guardray.core.normalize import normalize
        val_rows = [{**r, "text": normalize(r["text"])} for r in val_rows]
    vfeats = encode(tok, val_rows, scoring_length(tok, cfg))
    lengths = [len(f["input_ids"]) for f in feats]
    steps_per_epoch = len(epoch_batches(len(train_rows), cfg.batch_size, 0, seed, rank, world, lengths))
    total_steps = steps_per_epoch * cfg.epochs

    start_epoch, history, best = 1, [], {"epoch": 0, "score": -math.inf, "metrics": {}}
    bad_epochs, resumed_from, best_state = 0, 0, None  # best_state: the best epoch's trainable weights (CPU)
    opt_state = None
    # WiSE-FT captures the backbone's encoder before any weights are loaded or trained; a warm start (the adversarial
    # retrains) continues a checkpoint that already holds the interpolation, so it is not interpolated again
    wise = WiseFT(model, cfg.wise_alpha) if cfg.wise_alpha < 1.0 and not cfg.warm_start else None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            d = Path(d)
            if (d / TRAIN_STATE).exists():  # the run already finished: hand its final checkpoint back again
                state = json.loads((d / TRAIN_STATE).read_text())
                with tempfile.TemporaryDirectory() as tmp:
                    ck = None
                    if rank == 0:
                        shutil.copytree(d, tmp, dirs_exist_ok=True)
                        ck = ray.train.Checkpoint.from_directory(tmp)
                    ray.train.report(state["best_metrics"], checkpoint=ck, checkpoint_dir_name="final-resumed")
                return
            state = json.loads((d / "state.json").read_text())
            load_trainable(model, load_file(str(d / "trainable.safetensors")))
            best_state = load_file(str(d / ("best.safetensors" if (d / "best.safetensors").exists()
                                            else "trainable.safetensors")))
            opt_state = torch.load(d / "optim.pt", weights_only=True)  # tensors and numbers only
        start_epoch, history, bad_epochs = state["epoch"] + 1, state["history"], state["bad_epochs"]
        best = state["best"]
        resumed_from = state["epoch"]
        if state.get("stopped"):  # it had stopped early and failed while exporting: export, do not train on
            start_epoch = cfg.epochs + 1

    if ckpt is None and cfg.head_epochs and not cfg.warm_start:  # LP-FT: the head alone first (every rank alike)
        model.to(device)
        t0 = time.perf_counter()
        head_loss = fit_head(model, tok, feats, train_rows, epochs=cfg.head_epochs, lr=cfg.head_lr, seed=seed,
                             batch_size=cfg.batch_size, pos_weight=pw, category_weight=cw, device=device,
                             cat_pos_weight=cpw, precision=cfg.precision)
        if rank == 0 and config["progress"]:
            print(f"[guardray train] head alone (LP-FT): {cfg.head_epochs} epochs on frozen features, "
                  f"loss {head_loss:.4g} ({time.perf_counter() - t0:.0f} s)")
    model = ray.train.torch.prepare_model(model)  # DDP when world > 1, moved to this worker's device
    core = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    opt, sched = make_optimizer(model, cfg, total_steps)
    if opt_state is not None:
        opt.load_state_dict(opt_state["optimizer"])
        sched.load_state_dict(opt_state["scheduler"])

    def gather(x):
        if world == 1:
            return [x]
        out = [None] * world
        dist.all_gather_object(out, x)
        return out

    bar = None
    if config["progress"] and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=(start_epoch - 1) * steps_per_epoch, desc="train", unit="step",
                   mininterval=10.0)
    stop = start_epoch > cfg.epochs and resumed_from > 0 and resumed_from < cfg.epochs
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = epoch_batches(len(train_rows), cfg.batch_size, epoch, seed, rank, world, lengths)
        loss, seen = train_epoch(model, tok, feats, train_rows, batches, opt, sched, pos_weight=pw,
                                 category_weight=cw, device=device, progress=bar, cat_pos_weight=cpw,
                                 precision=cfg.precision)
        train_s = time.perf_counter() - t0
        losses = gather((loss * seen, seen))
        m = {"epoch": epoch, "train_loss": sum(a for a, _ in losses) / max(1, sum(b for _, b in losses)),
             "train_samples_per_s": sum(b for _, b in losses) / train_s, "lr": sched.get_last_lr()[0],
             "resumed_from_epoch": resumed_from}
        kept = None  # with WiSE-FT: the interpolated weights, validated and kept; training goes on from `cur`
        with (wise.applied(core) if wise is not None else contextlib.nullcontext()):
            if val_rows:  # each rank scores its shard; every rank computes the same metrics from the gathered whole
                mine = list(range(rank, len(val_rows), world))
                p, lo = predict(core, tok, vfeats, val_rows, mine, max(cfg.batch_size, 32), pos_weight=pw,
                                category_weight=cw, device=device, cat_pos_weight=cpw, precision=cfg.precision)
                parts = gather((mine, p, lo))
                idx = [i for part in parts for i in part[0]]
                probs = np.concatenate([part[1] for part in parts])[np.argsort(idx)]
                vloss = np.concatenate([part[2] for part in parts])[np.argsort(idx)]
                m.update(val_metrics([r["y"] for r in val_rows], probs, vloss, cfg.threshold_policy,
                                     cfg.target_fpr))
                score = m[MONITOR] if not math.isnan(m[MONITOR]) else -m["val_loss"]
            else:
                m["threshold"] = 0.5
                score = -m["train_loss"]
            if wise is not None:
                kept = trainable_state(core)
        m["epoch_s"] = time.perf_counter() - t0
        history.append(m)
        cur = trainable_state(core)
        if score > best["score"]:
            best, bad_epochs, best_state = {"epoch": epoch, "score": score, "metrics": m}, 0, kept or cur
        else:
            bad_epochs += 1
        stop = cfg.early_stopping_patience > 0 and bad_epochs >= cfg.early_stopping_patience
        if rank == 0 and config["progress"]:
            (bar.write if bar is not None else print)(f"[guardray train] epoch {epoch}/{cfg.epochs} " + " ".join(
                f"{k}={v:.4g}" for k, v in m.items() if k in ("train_loss", "val_loss", MONITOR, "val_f1",
                                                              "threshold")))
        with tempfile.TemporaryDirectory() as d:
            ck = None
            if rank == 0:
                save_file(cur, os.path.join(d, "trainable.safetensors"))
                if (best["epoch"] != epoch or wise is not None) and best_state is not None:
                    save_file(best_state, os.path.join(d, "best.safetensors"))
                torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                           os.path.join(d, "optim.pt"))
                Path(d, "state.json").write_text(json.dumps(
                    {"epoch": epoch, "history": history, "best": best, "bad_epochs": bad_epochs, "stopped": stop}))
                ck = ray.train.Checkpoint.from_directory(d)
            ray.train.report(m, checkpoint=ck, checkpoint_dir_name=f"epoch-{epoch:04d}")
        fail = config.get("fail_once_after_epoch") or 0
        if fail == epoch and rank == 0 and not Path(config["fail_marker"]).exists():
            Path(config["fail_marker"]).write_text("injected")  # fault-tolerance test hook: fail once, resume
            raise RuntimeError(f"injected worker failure after epoch {epoch} (test hook)")
        if stop:
            break
    if bar is not None:
        bar.close()

    if not config["export"]:
        return
    # final checkpoint: the best epoch's weights, LoRA merged, in Hugging Face format
    if best_state is not None:
        load_trainable(core, best_state)
    final_metrics = {**best["metrics"], "best_epoch": best["epoch"], "stopped_early": int(stop), "final": 1}
    with tempfile.TemporaryDirectory() as d:
        ck = None
        if rank == 0:
            out = core.merge_and_unload() if cfg.method == "lora" else core
            out.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
            Path(d, TRAIN_STATE).write_text(json.dumps({"history": history, "best_epoch": best["epoch"],
                                                         "best_metrics": final_metrics}))
            ck = ray.train.Checkpoint.from_directory(d)
        ray.train.report(final_metrics, checkpoint=ck, checkpoint_dir_name="final")


# ---------------------------------------------------------------- the role

class ClassifierTrainer:
    """Builds and runs the Ray Train `TorchTrainer` for one training run.

    Resources: `cfg.num_workers` workers, each `resources.trainer_cpus_per_worker` CPUs (torch threads) and, with
    `cfg.use_gpu`, `resources.trainer_gpus_per_worker` GPUs (NCCL; gloo on CPU). Inputs: train/val Examples (put once
    in the object store). Output: a Ray Train `Result` whose checkpoint is the final HF-format model (with `export`)
    or the last epoch's training state. `storage_path` must be absolute; the same `name` resumes a crashed run."""

    def __init__(self, cfg: TrainerConfig, resources: ResourcesConfig, *, storage_path: str, name: str,
                 seed: int = 0, progress: bool = True, export: bool = True, callbacks: list | None = None,
                 fail_once_after_epoch: int = 0, policy: Policy = BUILTIN):
        self.cfg, self.resources, self.seed, self.policy = cfg, resources, seed, policy
        self.storage_path, self.name = str(Path(storage_path).resolve()), name
        self.progress, self.export, self.callbacks = progress, export, list(callbacks or [])
        self.fail_once_after_epoch = fail_once_after_epoch

    def build(self, train: list[Example], val: list[Example]):
        import ray
        from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        cfg, res = self.cfg, self.resources
        per_worker = {**res.ray_resources("trainer"), "CPU": res.trainer_cpus_per_worker}
        if cfg.use_gpu:
            per_worker["GPU"] = res.trainer_gpus_per_worker or 1.0
        codes = self.policy.codes
        loop_config = {
            "trainer": to_dict(cfg), "seed": self.seed, "pos_weight": pos_weight(train, cfg.class_weight),
            "cat_pos_weight": category_pos_weights(train, cfg.class_weight, codes=codes),
            "label_names": ["unsafe", *codes],
            "data": ray.put({"train": example_rows(train, codes), "val": example_rows(val, codes)}),
            "threads": max(1, int(res.trainer_cpus_per_worker)), "progress": self.progress, "export": self.export,
            "fail_once_after_epoch": self.fail_once_after_epoch,
            "fail_marker": str(Path(self.storage_path) / self.name / "injected_failure"),
        }
        return TorchTrainer(
            train_loop_per_worker,
            train_loop_config=loop_config,
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker=per_worker),
            run_config=RunConfig(name=self.name, storage_path=self.storage_path,
                                 failure_config=FailureConfig(max_failures=cfg.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=self.callbacks,
                                 # Ray Train's per-report INFO lines would bury the epoch summaries
                                 logging_config=LoggingConfig(log_level="WARNING")),
        )

    def fit(self, train: list[Example], val: list[Example]):
        Path(self.storage_path).mkdir(parents=True, exist_ok=True)
        return self.build(train, val).fit()


# ---------------------------------------------------------------- checkpoint export (driver side)

# registry names -> the upstream Hugging Face ids, for the model card's base_model
HF_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _model_card(meta: dict) -> str:
    s, v, tc = meta["train_summary"], meta["val_metrics"], meta["trainer_config"]

    def table(d: dict) -> str:
        return "\n".join(f"| {k} | {n} |" for k, n in d.items()) or "| (none) | 0 |"

    def fmt(x):
        return f"{x:.4f}" if isinstance(x, float) else str(x)
    from guardray.core.taxonomy import policy_of
    pol = policy_of(meta)
    cats = "\n".join(f"| `{c.code}` | {c.name} | {c.includes} | {c.excludes or '-'} | {', '.join(c.openai) or '-'} |"
                     for c in pol.categories)
    fpr_note = f", target FPR {tc['target_fpr']}" if meta["threshold_policy"] == "target_fpr" else ""
    if (meta.get("scoring") or {}).get("pooling", "cls") == "cls":
        usage = f"""```python
from transformers import pipeline
clf = pipeline("text-classification", model="PATH", top_k=None)
scores = {{d["label"]: d["score"] for d in clf("How do I kill a Python process?")[0]}}
unsafe = scores["unsafe"] >= {meta['threshold']:.4f}
```"""
    else:
        usage = """The head reads the mean of the encoder's last hidden states (`pooling: mean`, guardray.json "scoring"),
so load it with guardray, which also scores long texts the way the threshold was calibrated:

```python
from guardray.classifier import GuardClassifier
clf = GuardClassifier.load("PATH")
print(clf.predict(["How do I kill a Python process?"]))  # label (at the calibrated threshold), score, categories
```"""
    metric_keys = ["val_f1", "val_precision", "val_recall", "val_fpr", "val_auprc", "val_roc_auc",
                   "val_recall_at_1pct_fpr", "val_category_micro_f1", "val_loss", "val_n", "val_n_unsafe"]
    return f"""---
library_name: transformers
pipeline_tag: text-classification
base_model: {HF_IDS.get(meta['base_model'], meta['base_model'])}
tags: [guardray, safety, guardrail, text-classification]
---
# guardray safety classifier

A prompt-safety guardrail trained by [guardray](https://github.com/) (Ray Train, {tc['method']} fine-tune of
`{meta['base_model']}`{f", warm-started from `{meta['warm_start']}`" if meta.get('warm_start') else ''}).
It enforces the policy **{pol.name}**{f" ({pol.description})" if pol.description else ""}:
{1 + len(pol.codes)} sigmoid outputs, `unsafe` (the decision head) and one per policy category (below). A text is
**unsafe when the `unsafe` score >= {meta['threshold']:.4f}**, the threshold calibrated on the validation split
(threshold policy `{meta['threshold_policy']}`{fpr_note}). That split comes from the same data as the training set,
so its FPR is not your traffic's: the demo guard's threshold flagged 4% of benign validation texts and 16-51% of the
benign texts of four public benchmarks. Before deploying, set it on a sample of your own traffic:
`guardray calibrate --model PATH --data SAMPLE --policy target_fpr --target-fpr 0.05 --out NEW` (labelled), or
`--policy flag_rate --flag-rate 0.02` (unlabelled logs).

{usage}

## Policy categories
| code | name | in | out | OpenAI moderation |
|---|---|---|---|---|
{cats}

## Training data
{s['train']['n']} training and {s['val']['n']} validation examples (validation taken from the training data,
grouped by root seed; evaluation sets are never trained on). Selection: {s['selection']['method']}
({s['selection'].get('kept', s['train']['n'])} of {s['selection'].get('pool', s['train']['n'])} kept).

| label | n |
|---|---|
{table(s['train']['by_label'])}

| source | n |
|---|---|
{table(s['train']['by_source'])}

| stage | n |
|---|---|
{table(s['train']['by_stage'])}

| round | n |
|---|---|
{table(s['train']['by_round'])}

## Hyper-parameters
| field | value |
|---|---|
{table({k: fmt(v) for k, v in tc.items()})}

## Validation metrics (best epoch {meta['best_epoch']}, at the calibrated threshold)
| metric | value |
|---|---|
{table({k: fmt(v[k]) for k in metric_keys if k in v})}

Validation scores are optimistic: the split shares the training data's distribution. See `guardray eval` for held-out
evaluation sets.
"""


def export_checkpoint(src: str, out_dir: str | Path, meta: dict) -> Path:
    """Copy the final HF-format checkpoint to out_dir (atomically replaced) and add guardray.json + README.md."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(TRAIN_STATE, ".*"))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    (tmp / "README.md").write_text(_model_card(meta))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# ---------------------------------------------------------------- the entry point others call

def train_classifier(cfg: TrainerConfig, train: list[Example], out_dir, *, resources: ResourcesConfig,
                     seed: int = 0, val_fraction: float = 0.15, val: list[Example] | None = None,
                     progress: bool = True, val_safe_share: float = 0.0, split_seed: int | None = None,
                     policy: Policy = BUILTIN) -> TrainResult:
    """Train on `train` (validation split taken from it unless `val` is given) and write the checkpoint to out_dir.
    The split is drawn with `split_seed` (default `seed`): keep it fixed across warm-started retrains, or a retrain
    validates on examples its starting checkpoint was trained on.

    Starts from `cfg.warm_start` when set (the adversarial rounds retrain that way). Needs Ray initialised
    (guardray.ray_utils.init_ray). Re-running after a crash with the same config and data resumes the Ray Train run
    from its last epoch."""
    import ray
    from guardray.ray_utils import init_ray
    from guardray.selection import select_training
    if not ray.is_initialized():
        init_ray()
    # Ray Train runs the loop in a directory of its own, so a relative checkpoint path (runs/x/classifier/round-0)
    # would not resolve there: make local paths absolute
    cfg = dataclasses.replace(cfg, **{k: str(Path(v).resolve()) for k in ("model", "warm_start", "s2l_proxy_model")
                                      if (v := getattr(cfg, k)) and Path(v).exists()})
    label_names = ("unsafe", *policy.codes)
    check_warm_start(cfg, label_names)
    bad = sorted({c for e in (*train, *(val or ())) for c in e.categories if c not in policy.by_code})
    if bad:
        raise DataError(f"training data carries categories {bad[:5]} that policy {policy.name!r} does not have "
                        f"({list(policy.codes)}); train with the policy those examples were written for")
    train = list(train)
    if val is None:
        train, val = split_validation(train, val_fraction, seed if split_seed is None else split_seed,
                                      safe_share=val_safe_share)
    check_data(train)
    pool = len(train)
    train, sel_info = select_training(cfg, train, seed=seed, resources=resources, progress=progress)
    check_data(train, f"training data after selection={cfg.selection}")
    out_dir = Path(out_dir)
    storage = out_dir.parent.resolve() / (out_dir.name + "_ray_train")
    name = run_name(cfg, train, val, seed)
    if progress:
        print(f"[guardray train] {len(train)} train / {len(val)} val examples, model {cfg.warm_start or cfg.model} "
              f"({cfg.method}), {cfg.num_workers} worker(s); Ray Train run {storage / name}", flush=True)
    t0 = time.perf_counter()
    result = ClassifierTrainer(cfg, resources, storage_path=str(storage), name=name, seed=seed,
                               progress=progress, policy=policy).fit(train, val)
    with result.checkpoint.as_directory() as d:
        state = json.loads((Path(d) / TRAIN_STATE).read_text())
        best = state["best_metrics"]
        base = cfg.model
        if cfg.warm_start:
            from guardray.classifier import read_meta
            from guardray.models import resolve
            base = read_meta(resolve(cfg.warm_start)).get("base_model", cfg.warm_start)
        val_m = {k: v for k, v in best.items() if k.startswith("val_")}
        meta = {
            "threshold": float(best["threshold"]),
            "threshold_policy": cfg.threshold_policy if val else "default_0.5_no_validation_split",
            "target_fpr": cfg.target_fpr if cfg.threshold_policy == "target_fpr" else None,
            "max_length": cfg.max_length, "base_model": base, "warm_start": cfg.warm_start,
            # how the threshold was calibrated, so GuardClassifier scores the same way
            "scoring": {"long_text": "head_tail", "max_length": cfg.score_max_length, "pooling": cfg.pooling,
                        "normalize": cfg.normalize},
            "label_names": list(label_names), "policy": policy.to_meta(), "best_epoch": state["best_epoch"], "val_metrics": val_m,
            "train_summary": {"train": data_summary(train), "val": data_summary(val),
                              "selection": {**sel_info, "pool": pool}},
            "trainer_config": to_dict(cfg), "seed": seed, "history": state["history"],
            "train_seconds": round(time.perf_counter() - t0, 1), "ray_train_run": name,
        }
        path = export_checkpoint(d, out_dir, meta)
    shutil.rmtree(storage / name, ignore_errors=True)  # the run finished: its epoch checkpoints are not needed
    if storage.exists() and not any(storage.iterdir()):
        storage.rmdir()
    if progress:
        print(f"[guardray train] wrote {path} (threshold {meta['threshold']:.4f}, "
              f"val F1 {val_m.get('val_f1', float('nan')):.4f}, AUPRC {val_m.get('val_auprc', float('nan')):.4f})",
              flush=True)
    return TrainResult(str(path), meta["threshold"], val_m, state["history"])


# ---------------------------------------------------------------- CLI

def _refuse_eval_data(paths, cfg: Config) -> None:
    """Training files must not come from the evaluation sets."""
    banned = [Path("../shared/data").resolve()] + [Path(p).resolve() for p in cfg.data.eval_sets]
    for p in paths:
        rp = Path(p).resolve()
        for b in banned:
            if rp == b or b in rp.parents:
                from guardray.errors import UsageError
                raise UsageError(f"{p}: this is evaluation data ({b}); guardray never trains on it. Pass training "
                                 "files only (the validation split is taken from them)")


def load_training_data(cfg: Config, data: list[str] | None = None, progress: bool = True) -> list[Example]:
    """--data files, else the seeds (data.seeds, else the policy's seeds) plus data.extra_train; categories must
    be the policy's codes. Skipped rows are counted and reported (only with data.skip_bad_rows)."""
    from guardray.core.records import read_many
    from guardray.core.taxonomy import load_policy
    from guardray.data import SEEDS_PATH
    policy = load_policy(cfg.policy)
    paths = list(data) if data else [*(cfg.data.seeds or policy.seeds or [str(SEEDS_PATH)]), *cfg.data.extra_train]
    _refuse_eval_data(paths, cfg)
    res = read_many(paths, skip_bad=cfg.data.skip_bad_rows, codes=policy.codes)
    if res.skipped:
        reasons = Counter(e.reason.split(":")[0] for e in res.skipped)
        print(f"[guardray train] skipped {len(res.skipped)} invalid row(s): {dict(reasons)}", file=sys.stderr)
    ids = Counter(e.id for e in res.examples)
    dups = [i for i, n in ids.items() if n > 1]
    if dups:
        raise DataError(f"duplicate example id(s) across the training files, e.g. {dups[:3]}; ids must be unique")
    if progress:
        print(f"[guardray train] loaded {len(res.examples)} examples from {len(paths)} file(s)", flush=True)
    return res.examples


def run_train(cfg: Config, data: list[str] | None = None, out: str | None = None, val_file: str | None = None,
              fresh: bool = False, progress: bool = True) -> TrainResult:
    """What `guardray train` and jobs/train.py run."""
    from guardray.core.records import read_examples
    from guardray.core.taxonomy import load_policy
    from guardray.ray_utils import init_ray
    train = load_training_data(cfg, data, progress)
    val = None
    if val_file:
        _refuse_eval_data([val_file], cfg)
        val = read_examples(val_file, skip_bad=cfg.data.skip_bad_rows, codes=load_policy(cfg.policy).codes).examples
    out_dir = Path(out) if out else cfg.run_dir / "classifier"
    if fresh:
        shutil.rmtree(out_dir.parent / (out_dir.name + "_ray_train"), ignore_errors=True)
    init_ray(cfg.run.ray_address)
    return train_classifier(cfg.trainer, train, out_dir, resources=cfg.resources, seed=cfg.run.seed,
                            val_fraction=cfg.data.val_fraction, val=val, progress=progress,
                            val_safe_share=cfg.data.val_safe_share, policy=load_policy(cfg.policy))


def cli(argv: list[str]) -> int:
    from guardray.core.config import load_config
    ap = argparse.ArgumentParser(prog="guardray train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (trainer, data, resources blocks); default: defaults")
    ap.add_argument("--data", nargs="+", default=None, metavar="FILE",
                    help="Example files (jsonl/csv/parquet/datasets dir); default: seeds + data.extra_train")
    ap.add_argument("--val", default=None, metavar="FILE",
                    help="explicit validation file (default: split off the training data)")
    ap.add_argument("--out", default=None, help="checkpoint folder (default: runs/NAME/classifier)")
    ap.add_argument("--fresh", action="store_true", help="ignore a crashed run's Ray Train state; start over")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. trainer.lr=3e-5")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    r = run_train(cfg, args.data, args.out, args.val, args.fresh, progress=not args.quiet)
    print(json.dumps({"path": r.path, "threshold": r.threshold,
                      **{k: r.metrics.get(k) for k in ("val_f1", "val_auprc", "val_fpr")}}))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
