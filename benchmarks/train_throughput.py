"""Training throughput: samples/s through Ray Train (1 worker, TorchTrainer) vs a plain PyTorch loop, same model,
same data, same batches, same torch thread count, in the same run. Writes benchmarks/train_throughput.md.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py                       # MiniLM, seeds, 2 epochs
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py --model tiny-encoder --epochs 2 --no-write

Both sides run the identical epoch code (guardray.train_steps.train_epoch on guardray.train_steps.epoch_batches, the
loss and optimizer of ClassifierTrainer), without validation. "steady" is the last epoch's samples/s as timed around
the epoch (first-epoch allocation and warm-up excluded); "end-to-end" is examples x epochs / the wall time of the
whole call, including model loading, and for Ray Train the controller and worker start-up. Ray's workers run at nice
15 by default; this script starts its own local Ray with worker_niceness=0 so both sides compete equally for the CPU
with whatever else runs on the machine (the load average is printed in the table).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plain_loop(cfg, train, threads: int, seed: int = 0) -> dict:
    """The baseline: the same epochs in this process, no Ray."""
    import torch
    from guardray.core.splits import category_pos_weights, example_rows, pos_weight
    from guardray.train_steps import build_model, encode, epoch_batches, make_optimizer, train_epoch
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, tok = build_model(cfg, seed)
    rows = example_rows(train)
    feats = encode(tok, rows, cfg.max_length)
    lengths = [len(f["input_ids"]) for f in feats]  # length-grouped batches, as the Train worker draws them
    steps = len(epoch_batches(len(rows), cfg.batch_size, 0, seed, lengths=lengths)) * cfg.epochs
    opt, sched = make_optimizer(model, cfg, steps)
    pw, cpw = pos_weight(train, cfg.class_weight), category_pos_weights(train, cfg.class_weight)
    per_epoch = []
    for epoch in range(1, cfg.epochs + 1):
        te = time.perf_counter()
        _, seen = train_epoch(model, tok, feats, rows, epoch_batches(len(rows), cfg.batch_size, epoch, seed,
                                                                     lengths=lengths),
                              opt, sched, pos_weight=pw, category_weight=cfg.category_loss_weight, cat_pos_weight=cpw)
        per_epoch.append(seen / (time.perf_counter() - te))
    return {"steady": per_epoch[-1], "per_epoch": per_epoch,
            "end_to_end": len(train) * cfg.epochs / (time.perf_counter() - t0)}


def ray_train(cfg, train, threads: int, seed: int = 0) -> dict:
    """Ray Train, one worker with `threads` CPUs, the trainer's own loop (no validation, no export)."""
    import json
    from guardray.core.config import ResourcesConfig
    from guardray.trainer import ClassifierTrainer
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        result = ClassifierTrainer(cfg, ResourcesConfig(trainer_cpus_per_worker=threads), storage_path=d,
                                   name="bench", seed=seed, progress=False, export=False).fit(train, [])
        wall = time.perf_counter() - t0
        with result.checkpoint.as_directory() as c:
            hist = json.loads((Path(c) / "state.json").read_text())["history"]
    per_epoch = [h["train_samples_per_s"] for h in hist]
    return {"steady": per_epoch[-1], "per_epoch": per_epoch, "end_to_end": len(train) * cfg.epochs / wall}


def _median(runs: list[dict]) -> dict:
    import statistics
    return {"steady": statistics.median(r["steady"] for r in runs),
            "end_to_end": statistics.median(r["end_to_end"] for r in runs),
            "per_epoch": [x for r in runs for x in r["per_epoch"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides (= the worker's CPUs)")
    ap.add_argument("--n", type=int, default=0, help="use the first N seeds (0 = all)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate plain/Ray runs this many times; medians")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)

    import ray
    from guardray.core.config import TrainerConfig
    from guardray.data import SEEDS_PATH, load_seeds
    train = load_seeds([SEEDS_PATH])  # the prompt seeds
    if args.n:
        train = train[:args.n]
    cfg = TrainerConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                        num_workers=1, early_stopping_patience=0, max_failures=0)
    ray.init(num_cpus=max(2, args.threads), include_dashboard=False, configure_logging=False,
             _system_config={"worker_niceness": 0},
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    load0 = os.getloadavg()[0]
    plains, rts = [], []
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both sides alike
        plains.append(plain_loop(cfg, train, args.threads))
        rts.append(ray_train(cfg, train, args.threads))
    plain, rt = _median(plains), _median(rts)
    load1 = os.getloadavg()[0]
    ray.shutdown()

    def row(name, r):
        return (f"| {name} | {r['steady']:.1f} | {r['end_to_end']:.1f} | "
                + ", ".join(f"{x:.1f}" for x in r["per_epoch"]) + " |")
    cmd = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py " + " ".join(argv or sys.argv[1:])
    md = "\n".join([
        "# Training throughput: Ray Train (1 worker) vs a plain PyTorch loop", "",
        "Rerun (writes this file):", "", "```", cmd.strip(), "```", "",
        f"Model `{args.model}`, {len(train)} packaged seed examples, {args.epochs} epochs, batch {args.batch_size}, "
        f"max_length {args.max_length} (dynamic padding), {args.repeats} alternating repeat(s) (medians; the "
        f"per-epoch column lists every epoch of every repeat), {args.threads} torch threads on both sides, full "
        f"fine-tune, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
        f"load average {load0:.1f} before / {load1:.1f} after. Same epoch code on both sides "
        "(guardray.train_steps.train_epoch); no validation.", "",
        "| loop | steady samples/s (last epoch) | end-to-end samples/s (incl. start-up) | per-epoch samples/s |",
        "|---|---:|---:|---|",
        row("plain PyTorch (this process)", plain),
        row("Ray Train TorchTrainer, 1 worker", rt),
        "",
        f"Ray Train / plain, steady: **{rt['steady'] / plain['steady']:.2f}x**; end-to-end: "
        f"{rt['end_to_end'] / plain['end_to_end']:.2f}x. With one worker Ray Train does not wrap the model in DDP, so "
        "the steady-state gap is the worker process itself (and the per-epoch checkpoint report); the end-to-end gap "
        "is the controller and worker start-up plus the epoch checkpoints written to storage, a fixed cost per run.",
        ""])
    print(md)
    if not args.no_write:
        (ROOT / "benchmarks" / "train_throughput.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
