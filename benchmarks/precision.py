"""fp32 vs bf16 (guardray.precision: autocast in training, bf16 weights in scoring), side by side in one process: training samples/s and scoring texts/s
of the same model on the same data, and how far bf16 moves a trained checkpoint's scores. Writes
benchmarks/precision.md.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/precision.py --model runs/demo/classifier/round-0

Training: all-MiniLM-L6-v2 (the demo's trainer block), `--n` packaged seeds plus their operator children (the demo's
mix of short and long inputs), length-grouped batches; one untimed warm-up epoch, then `--epochs` timed epochs per
precision, alternating fp32 / bf16 so both see the same machine load. Scoring: `--model` (a trained checkpoint) on
the --sets of ../shared/data (scores only: nothing is tuned on them) or, where that folder is absent, on the
packaged seeds; texts/s in batches, ms per text one at a time (a server at concurrency 1), the largest score change, decisions flipped at the checkpoint's threshold, AUPRC per
precision. bf16 is only worth it where the CPU computes it natively (AVX512-BF16 / AMX); the table says which CPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PRECISIONS = ("fp32", "bf16")


def train_speed(n: int, epochs: int, threads: int, seed: int = 0) -> dict:
    """samples/s of train_epoch per precision (same model weights start, same batches)."""
    import copy
    import random
    import torch
    from guardray.core.config import load_config
    from guardray.core.operators import apply_operators
    from guardray.core.splits import category_pos_weights, example_rows, pos_weight
    from guardray.data import SEEDS_PATH, load_seeds
    from guardray.train_steps import build_model, encode, epoch_batches, make_optimizer, train_epoch
    torch.set_num_threads(threads)
    cfg = load_config(str(ROOT / "configs" / "demo.yaml"))
    seeds = load_seeds([SEEDS_PATH])
    random.Random(seed).shuffle(seeds)
    seeds = seeds[:n]
    train = seeds + apply_operators(seeds, ops=cfg.synth.operators, per_example=1, seed=seed)[:n // 2]
    rows = example_rows(train)
    model0, tok = build_model(cfg.trainer, seed)
    feats = encode(tok, rows, cfg.trainer.max_length)
    lengths = [len(f["input_ids"]) for f in feats]
    pw, cpw = pos_weight(train, cfg.trainer.class_weight), category_pos_weights(train, cfg.trainer.class_weight)
    out = {p: [] for p in PRECISIONS}
    models = {p: copy.deepcopy(model0) for p in PRECISIONS}
    opts = {p: make_optimizer(models[p], cfg.trainer, 10 ** 6) for p in PRECISIONS}
    for epoch in range(0, epochs + 1):  # epoch 0: warm-up, not timed
        for p in PRECISIONS:
            opt, sched = opts[p]
            t = time.perf_counter()
            _, seen = train_epoch(models[p], tok, feats, rows, epoch_batches(len(rows), cfg.trainer.batch_size, epoch,
                                                                             seed, lengths=lengths),
                                  opt, sched, pos_weight=pw, category_weight=cfg.trainer.category_loss_weight,
                                  cat_pos_weight=cpw, precision=p)
            if epoch:
                out[p].append(seen / (time.perf_counter() - t))
    tokens = sum(lengths) / len(lengths)
    return {"examples": len(rows), "mean_tokens": tokens, **{p: sum(v) / len(v) for p, v in out.items()}}


def score_delta(model: str, sets: list[Path]) -> list[dict]:
    import numpy as np
    from sklearn.metrics import average_precision_score
    from guardray.classifier import GuardClassifier
    from guardray.core.records import read_examples
    clfs = {p: GuardClassifier.load(model, precision=p) for p in PRECISIONS}
    rows = []
    for s in sets:
        ex = read_examples(s, strict_categories=False).examples
        texts = [e.text for e in ex]
        y = np.array([e.label == "unsafe" for e in ex])
        res = {}
        for p, clf in clfs.items():
            clf.score(texts[:8])
            t = time.perf_counter()
            res[p] = (clf.score(texts).unsafe, len(texts) / (time.perf_counter() - t))
        one = {}
        for p, clf in clfs.items():  # one text per call, as a server at concurrency 1 sees them (first 100)
            t = time.perf_counter()
            for x in texts[:100]:
                clf.score([x])
            one[p] = (time.perf_counter() - t) / min(100, len(texts)) * 1000
        a, b = res["fp32"][0], res["bf16"][0]
        thr = clfs["fp32"].threshold
        rows.append({"set": s.parent.name if s.name == "eval.jsonl" else s.name, "n": len(texts),
                     "fp32_tps": res["fp32"][1], "bf16_tps": res["bf16"][1], "fp32_ms1": one["fp32"],
                     "bf16_ms1": one["bf16"],
                     "max_delta": float(np.abs(a - b).max()), "mean_delta": float(np.abs(a - b).mean()),
                     "flips": int(((a >= thr) != (b >= thr)).sum()),
                     "auprc_fp32": float(average_precision_score(y, a)) if 0 < y.sum() < len(y) else None,
                     "auprc_bf16": float(average_precision_score(y, b)) if 0 < y.sum() < len(y) else None})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "classifier" / "round-0"),
                    help="a trained checkpoint to score with")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--sets", default="openai-moderation,xstest,toxigen-demonstrations",
                    help="comma-separated eval sets under --data (moderation-length, short prompts, comments)")
    ap.add_argument("--n", type=int, default=320, help="seeds to train on (plus half as many operator children)")
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per precision")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch
    from guardray.precision import cpu_native_bf16
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    sets = [data / n / "eval.jsonl" for n in args.sets.split(",") if (data / n / "eval.jsonl").exists()]
    if not sets:
        from guardray.data import SEEDS_PATH
        sets = [Path(SEEDS_PATH)]
    load0 = os.getloadavg()[0]
    tr = train_speed(args.n, args.epochs, args.threads)
    print(tr, flush=True)
    sc = score_delta(args.model, sets)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# fp32 vs bf16 (guardray.precision): autocast in training, bf16 weights in scoring", "",
        "Regenerate (one process, both precisions alternating, so both see the same load):", "",
        "```", f"HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/precision.py --model {_rel(args.model)} --n {args.n} "
        f"--epochs {args.epochs} --threads {args.threads}", "```", "",
        f"Machine: {cpu}, {os.cpu_count()} cores, {args.threads} torch threads, native bf16: {cpu_native_bf16()}, "
        f"load average before {load0:.2f}; torch {torch.__version__}.", "",
        "## Training (all-MiniLM-L6-v2, the demo's trainer block, train_epoch on length-grouped batches)", "",
        "| examples | mean tokens | fp32 samples/s | bf16 samples/s | speed-up |", "|---:|---:|---:|---:|---:|",
        f"| {tr['examples']} | {tr['mean_tokens']:.0f} | {tr['fp32']:.1f} | {tr['bf16']:.1f} | "
        f"{tr['bf16'] / tr['fp32']:.2f}x |", "",
        f"## Scoring `{_rel(args.model)}` (GuardClassifier.score, batch 32, length-bucketed; bf16 = bf16 weights; threshold "
        f"{_threshold(args.model):.3f})", "",
        "| set | n | fp32 texts/s | bf16 texts/s | speed-up | ms per lone text fp32 / bf16 | max abs score change | "
        "mean | decisions flipped | AUPRC fp32 | AUPRC bf16 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sc:
        f = (lambda v: "n/a" if v is None else f"{v:.4f}")
        lines.append(f"| {r['set']} | {r['n']} | {r['fp32_tps']:.0f} | {r['bf16_tps']:.0f} | "
                     f"{r['bf16_tps'] / r['fp32_tps']:.2f}x | {r['fp32_ms1']:.1f} / {r['bf16_ms1']:.1f} | {r['max_delta']:.4f} | {r['mean_delta']:.5f} | "
                     f"{r['flips']} | {f(r['auprc_fp32'])} | {f(r['auprc_bf16'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        (ROOT / "benchmarks" / "precision.md").write_text(text)
    return 0


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def _threshold(path: str) -> float:
    from guardray.classifier import read_meta
    return float(read_meta(path).get("threshold", 0.5))


if __name__ == "__main__":
    raise SystemExit(main())
