"""guardray (MiniLM) rows for benchmarks/quality.md: what the synthetic data and the data selection are worth.

    make demo                                    # writes the curated synthetic set runs/demo/synth/v0/curated/
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_variants.py --synthetic runs/demo/synth/v0/curated

Trains all-MiniLM-L6-v2 (configs/train.yaml settings, at most --epochs epochs; Ray Train, 1 CPU worker) on:

| label | training data |
|---|---|
| guardray:minilm-seeds | the packaged seeds minus a fixed validation slice |
| guardray:minilm-seeds+synth | those seeds + the curated synthetic examples (children of validation seeds removed) |
| guardray:minilm-pool-random-B | S2L comparison at budget B (default half the pool; "all" = the seeds+synth row): B examples of the pool drawn at random |
| guardray:minilm-pool-s2l-B | B examples of the pool picked by S2L (loss-trajectory clusters of a small proxy) |

Every variant validates on the SAME held-out seed slice (runs/quality/val_seeds.jsonl): early stopping and the
threshold calibration see identical data, so rows differ only by training data. Then each checkpoint is scored on
every set in ../shared/data by benchmarks/quality.py (`--reuse`: the baseline reports are kept), which rewrites
benchmarks/quality.md. Per-variant training facts go to benchmarks/out/quality_variants.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", required=True, help="curated synthetic examples (a synth stage folder or file)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "quality"))
    ap.add_argument("--budget", type=int, default=0, help="S2L/random budget (default: half the pool)")
    ap.add_argument("--only", default="", help="comma-separated subset of: seeds,synth,random,s2l")
    ap.add_argument("--no-eval", action="store_true", help="train only; skip benchmarks/quality.py")
    ap.add_argument("--epochs", type=int, default=3, help="max epochs per variant (early stopping may stop sooner)")
    args = ap.parse_args(argv)

    from guardray.core.config import load_config
    from guardray.core.records import read_examples, write_examples
    from guardray.data import SEEDS_PATH, load_seeds
    from guardray.ray_utils import init_ray
    from guardray.trainer import split_validation, train_classifier

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = load_seeds([SEEDS_PATH])  # the prompt seeds
    train_seeds, val = split_validation(seeds, 0.15, seed=0)
    write_examples(val, out / "val_seeds.jsonl")
    syn_path = Path(args.synthetic)
    syn = read_examples(syn_path / "data.parquet" if syn_path.is_dir() else syn_path).examples
    val_roots = {e.id for e in val}
    syn_kept = [e for e in syn if (e.seed_id or "") not in val_roots]
    pool = train_seeds + syn_kept
    budget = args.budget or len(pool) // 2
    print(f"seeds {len(seeds)} -> train {len(train_seeds)} / val {len(val)}; synthetic {len(syn)}, "
          f"{len(syn) - len(syn_kept)} dropped as children of validation seeds; pool {len(pool)}, budget {budget}",
          flush=True)

    cfg = load_config(ROOT / "configs" / "train.yaml")
    t = dataclasses.replace(cfg.trainer, epochs=args.epochs)
    variants = {
        "seeds": ("guardray:minilm-seeds", train_seeds, t),
        "synth": ("guardray:minilm-seeds+synth", pool, t),
        "random": (f"guardray:minilm-pool-random-{budget}", pool,
                   dataclasses.replace(t, selection="random", selection_budget=budget)),
        "s2l": (f"guardray:minilm-pool-s2l-{budget}", pool, dataclasses.replace(t, selection="s2l",
                                                                               selection_budget=budget)),
    }
    only = [x for x in args.only.split(",") if x] or list(variants)
    init_ray()
    facts = {}
    for key in only:
        label, data, tcfg = variants[key]
        folder = out / label.split(":", 1)[1]
        t0 = time.perf_counter()
        res = train_classifier(tcfg, data, folder, resources=cfg.resources, seed=cfg.run.seed, val=val,
                               progress=False)
        facts[label] = {"path": str(folder), "train_pool": len(data), "threshold": res.threshold,
                        "val_f1": res.metrics.get("val_f1"), "val_auprc": res.metrics.get("val_auprc"),
                        "epochs": len(res.history), "seconds": round(time.perf_counter() - t0, 1),
                        "selection": tcfg.selection, "budget": tcfg.selection_budget}
        print(f"{label}: {facts[label]}", flush=True)
    facts_file = ROOT / "benchmarks" / "out" / "quality_variants.json"
    facts_file.parent.mkdir(parents=True, exist_ok=True)
    if facts_file.exists():  # keep the facts of variants trained by an earlier call
        facts = {**json.loads(facts_file.read_text()).get("variants", {}), **facts}
    facts_file.write_text(json.dumps(
        {"seeds_train": len(train_seeds), "val": len(val), "synthetic": len(syn), "synthetic_kept": len(syn_kept),
         "pool": len(pool), "budget": budget, "variants": facts}, indent=2))
    # every variant trained so far (this call or an earlier one) gets its rows; quality.py --reuse skips re-scoring
    models = [f"{label}={out / label.split(':', 1)[1]}" for label, _, _ in variants.values()
              if (out / label.split(":", 1)[1] / "guardray.json").exists()]
    if args.no_eval or not models:
        return 0
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--reuse"]
    for m in models:
        cmd += ["--model", m]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
