"""Recipe sweep: which trainer recipe transfers? A grid over pooling, learning rate, epochs and training length (plus
class weights and the category head), each trained with guardray's own training pieces (guardray.train_steps: the
model, loss, length-grouped batches, schedule, best-epoch choice and threshold calibration the Ray Train workers
use), chosen on validation data split from the seeds only, then the chosen recipe and the demo's are scored once on
../shared/data. Fast on a GPU (one H200: the whole sweep in a few minutes, several trainings at once); on 2 CPU cores
a run takes ~10 min, so use `--quick` there.

    .venv/bin/python benchmarks/recipe_sweep.py prepare --out runs/sweep     # here, seconds (CPU)
    python3 benchmarks/recipe_sweep.py run --data runs/sweep --out OUT --workers 8  # GPU (torch + transformers only)
    .venv/bin/python benchmarks/recipe_sweep.py report --results OUT/results.jsonl  # -> benchmarks/recipe_sweep.md

`prepare` writes what `run` needs, so `run` needs neither Ray nor the operators' dependencies: the two validation
splits as JSONL rows, the evaluation texts already canonicalised (guardray.core.normalize, as `GuardClassifier`
scores them), and all-MiniLM-L6-v2 as fp16 safetensors (the device tool carries at most 64 MiB; `run` trains in
fp32 with bf16 autocast on CUDA, as the trainer does).

Selection protocol (fixed before any run; no evaluation set is read until the last phase):
1. grid: every recipe on two splits of the packaged prompt seeds, torch seed 0:
   - `seed`: the trainer's split (15%, grouped by root seed, >= 60% benign); validation = the held-out seeds plus
     their operator children; training = the other seeds plus the operator children the pipeline's `operate` step
     draws (60%, one each) - the ablation's "+operators" row;
   - `genre`: train on requests, questions and code (and their children), validate on the genres held out of
     training (chat, comments, posts, emails, stories, and their children): the shift deployment traffic brings.
   A recipe's score = the mean of its best-epoch validation AUPRC on the two splits (threshold-free).
2. the 3 best recipes and the demo's recipe again with torch seeds 1 and 2; the winner has the best 3-seed mean.
3. the winner and the demo's recipe, 3 torch seeds each on the `seed` split, scored on every set in ../shared/data
   at each run's own calibrated threshold (best F1 on its validation split): reported, never selected on.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHIFT = {"genre:comment", "genre:post", "genre:chat", "genre:email", "genre:story"}
# the demo's recipe (configs/demo.yaml + TrainerConfig defaults)
BASE = {"pooling": "cls", "lr": 8e-5, "epochs": 2, "max_length": 128, "class_weight": "balanced",
        "category_loss_weight": 0.5, "freeze": 0, "lp_epochs": 0, "wise": 1.0}
# `--phase transfer`: recipes the fine-tuning literature expects to transfer better under distribution shift, run
# after the grid showed that the validation winner did not (benchmarks/recipe.md): a linear probe on the frozen
# encoder's mean embedding; LP-FT (Kumar et al. 2022: probe first, then fine-tune, so the random head does not
# distort the pretrained features); lower layers frozen; WiSE-FT (Wortsman et al. 2022: the fine-tuned encoder's
# weights interpolated halfway back to the pretrained ones); the least-fitted recipe of the grid
TRANSFER = [BASE, dict(BASE, pooling="mean", freeze=-1, lr=1e-3, epochs=10), dict(BASE, pooling="mean", lp_epochs=3),
            dict(BASE, freeze=3), dict(BASE, wise=0.5), dict(BASE, pooling="mean", lp_epochs=3, wise=0.5),
            dict(BASE, lr=3e-5)]
# `--phase confirm`: the recipes the trainer now offers (trainer.head_epochs, trainer.wise_alpha), measured through
# the trainer's own code (guardray.train_steps.fit_head / WiseFT), against the demo's previous recipe
CONFIRM = [BASE, dict(BASE, pooling="mean", lp_epochs=3), dict(BASE, pooling="mean", lp_epochs=3, wise=0.5),
           dict(BASE, wise=0.5)]


def recipe_name(r: dict) -> str:
    extra = "".join(f" {k}={r.get(k, BASE[k])}" for k in ("class_weight", "category_loss_weight", "freeze",
                                                         "lp_epochs", "wise") if r.get(k, BASE[k]) != BASE[k])
    return f"{r['pooling']} lr={r['lr']:g} ep={r['epochs']} len={r['max_length']}{extra}"


def grid() -> list[dict]:
    out = [dict(BASE, pooling=p, lr=lr, epochs=ep, max_length=ml)
           for p, lr, ep, ml in itertools.product(("cls", "mean"), (3e-5, 8e-5, 1.5e-4), (2, 4), (128, 256))]
    return out + [dict(BASE, class_weight="none"), dict(BASE, category_loss_weight=0.0)]


# ---------------------------------------------------------------------------------------------------- prepare

def prepare(args) -> None:
    from guardray.core.config import load_config
    from guardray.core.normalize import normalize
    from guardray.core.operators import apply_operators
    from guardray.core.splits import example_rows, split_validation
    from guardray.data import SEEDS_PATH, load_padding, load_seeds
    from guardray.models import resolve
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablation import eval_sets
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    s = cfg.synth
    seeds = load_seeds([SEEDS_PATH])
    ops = apply_operators(seeds, ops=s.operators, per_example=s.operator_per_seed, seed=cfg.run.seed,
                          padding=load_padding(s.padding))
    rnd = random.Random(f"{cfg.run.seed}:operate")
    picked = {e.id for e in seeds if rnd.random() < s.operator_fraction}  # the pipeline's `operate` draw
    tr, va = split_validation(seeds, cfg.data.val_fraction, seed=cfg.run.seed, safe_share=cfg.data.val_safe_share)
    val_ids = {e.id for e in va}
    splits = {"seed": (tr + [e for e in ops if e.seed_id in picked and e.seed_id not in val_ids],
                       va + [e for e in ops if e.seed_id in val_ids])}
    shifted = {e.id for e in seeds if SHIFT & set(e.tags)}
    splits["genre"] = ([e for e in seeds if e.id not in shifted]
                       + [e for e in ops if e.seed_id in picked and e.seed_id not in shifted],
                       [e for e in seeds if e.id in shifted] + [e for e in ops if e.seed_id in shifted])
    facts = {}
    for name, (t, v) in splits.items():
        for part, exs in (("train", t), ("val", v)):
            (out / f"{name}_{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in example_rows(exs)))
            facts[f"{name}_{part}"] = {"n": len(exs), "unsafe": sum(e.unsafe for e in exs)}
    ev = out / "eval"
    ev.mkdir(exist_ok=True)
    for d in eval_sets(ROOT / "runs" / "ablation", 5000):
        rows = [json.loads(x) for x in (Path(d) / "eval.jsonl").read_text().splitlines() if x.strip()]
        (ev / f"{Path(d).name}.jsonl").write_text("".join(
            json.dumps({"text": normalize(r["text"]), "y": int(r["label"] == "unsafe")}) + "\n" for r in rows))
        facts[f"eval:{Path(d).name}"] = len(rows)
    import torch
    from transformers import AutoModel, AutoTokenizer
    src = resolve("minilm")
    m = AutoModel.from_pretrained(src).to(torch.float16)
    m.save_pretrained(out / "model")
    AutoTokenizer.from_pretrained(src).save_pretrained(out / "model")
    (out / "facts.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts))


# -------------------------------------------------------------------------------------------------------- run

def _rows(path: Path, limit: int = 0) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows[:limit] if limit else rows


def train_one(job: dict) -> dict:
    """One training run (a recipe on a split with a torch seed); with job["eval"], also score the eval sets."""
    import numpy as np
    import torch
    from guardray.core import metrics as M
    from guardray.core.config import TrainerConfig
    from guardray.classifier import load_backbone
    from guardray.train_steps import (WiseFT, encode, epoch_batches, fit_head, load_trainable, make_optimizer,
                                      predict, train_epoch, trainable_state, val_metrics)
    torch.set_num_threads(job["threads"])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    r, data = job["recipe"], Path(job["data"])
    cfg = TrainerConfig(lr=r["lr"], epochs=r["epochs"], max_length=r["max_length"], pooling=r["pooling"],
                        class_weight=r["class_weight"], category_loss_weight=r["category_loss_weight"])
    t0 = time.time()
    torch.manual_seed(job["seed"])
    model, tok = load_backbone(str(data / "model"), pooling=cfg.pooling)
    model = model.float().to(dev)
    enc = model.base_model
    if r.get("freeze", 0):  # -1: the whole encoder (a linear probe); k: embeddings + the first k layers
        parts = [enc] if r["freeze"] < 0 else [enc.embeddings, *enc.encoder.layer[: r["freeze"]]]
        for part in parts:
            part.requires_grad_(False)
    wise = WiseFT(model, r["wise"]) if r.get("wise", 1.0) < 1.0 else None  # the trainer's trainer.wise_alpha
    tr = _rows(data / f"{job['split']}_train.jsonl", job["limit"])
    va = _rows(data / f"{job['split']}_val.jsonl", job["limit"])
    n_pos = sum(x["y"][0] for x in tr)
    pw = (len(tr) - n_pos) / n_pos if cfg.class_weight == "balanced" else 1.0
    cat_rows = [x for x in tr if x["cat"]]
    cpw = None
    if cfg.class_weight == "balanced" and cat_rows:
        cnt = np.sum([x["y"][1:] for x in cat_rows], axis=0)
        cpw = [min(20.0, (len(cat_rows) - c) / c) if c else 1.0 for c in cnt]
    ftr, fva = encode(tok, tr, cfg.max_length), encode(tok, va, cfg.score_max_length)
    lengths = [len(f["input_ids"]) for f in ftr]
    steps = cfg.epochs * len(epoch_batches(len(tr), cfg.batch_size, 0, job["seed"], lengths=lengths))
    kw = {"pos_weight": pw, "category_weight": cfg.category_loss_weight, "device": dev, "cat_pos_weight": cpw}
    if r.get("lp_epochs", 0):  # LP-FT: the head alone on frozen features first (the trainer's trainer.head_epochs)
        fit_head(model, tok, ftr, tr, epochs=r["lp_epochs"], lr=1e-3, seed=job["seed"], batch_size=cfg.batch_size, **kw)
    opt, sched = make_optimizer(model, cfg, steps)
    best, hist, best_state = None, [], None
    for ep in range(1, cfg.epochs + 1):
        train_epoch(model, tok, ftr, tr, epoch_batches(len(tr), cfg.batch_size, ep, job["seed"], lengths=lengths),
                    opt, sched, **kw)
        with (wise.applied(model) if wise is not None else contextlib.nullcontext()):  # WiSE-FT: validate and
            probs, losses = predict(model, tok, fva, va, list(range(len(va))), 64, **kw)   # keep the interpolation
            m = val_metrics([x["y"] for x in va], probs, losses, cfg.threshold_policy, cfg.target_fpr)
            state = trainable_state(model)
        hist.append({k: m[k] for k in ("val_auprc", "val_f1", "val_fpr", "threshold")})
        if best is None or m["val_auprc"] > best["val_auprc"]:
            best, best_state = dict(m, best_epoch=ep), state
    out = {**{k: v for k, v in job.items() if k not in ("data", "threads", "limit", "eval")}, "name": recipe_name(r),
           "val": best, "history": hist, "seconds": round(time.time() - t0, 1), "device": dev}
    if job.get("eval"):
        load_trainable(model, best_state)
        out["eval"] = {}
        for f in sorted((data / "eval").glob("*.jsonl")):
            rows = _rows(f, job["limit"])
            rows = [{"text": x["text"], "y": [float(x["y"])] + [0.0] * 15, "cat": False} for x in rows]
            p, _ = predict(model, tok, encode(tok, rows, cfg.score_max_length), rows, list(range(len(rows))), 64,
                           **kw)
            y, s = np.array([int(x["y"][0]) for x in rows]), p[:, 0]
            at = M.binary_metrics(y, s, best["threshold"])
            out["eval"][f.stem] = {"f1": at["f1"], "fpr": at["fpr"], "recall": at["recall"],
                                   "auprc": M.auprc(y, s), "n": len(rows)}
    return out


def run(args) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_file = out / "results.jsonl"
    recipes = grid()[: args.max_recipes] if args.max_recipes else grid()
    base = dict(data=str(Path(args.data).resolve()), threads=args.threads, limit=args.limit)
    t_start = time.time()
    if args.phase in ("transfer", "confirm"):
        recipes = TRANSFER if args.phase == "transfer" else CONFIRM

    def go(jobs):
        done = []
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            for r in pool.map(train_one, [dict(base, **j) for j in jobs]):
                done.append(r)
                with res_file.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
                print(f"[{time.time() - t_start:6.0f}s] {r['phase']} {r['split']:5s} s{r['seed']} {r['name']:40s} "
                      f"val AUPRC {r['val']['val_auprc']:.3f} (epoch {r['val']['best_epoch']}, {r['seconds']} s)",
                      flush=True)
        return done

    def score(results, names):
        by = {}
        for r in results:
            by.setdefault(r["name"], []).append(r["val"]["val_auprc"])
        return {n: sum(by[n]) / len(by[n]) for n in names if n in by}

    if args.phase != "select":  # every recipe, both splits, every seed; scored on the evaluation sets (report)
        go([{"phase": args.phase, "recipe": r, "split": sp, "seed": s, "eval": sp == "seed", "role": recipe_name(r)}
            for r in recipes for s in range(args.seeds) for sp in ("seed", "genre")])
        print(f"done in {time.time() - t_start:.0f} s", flush=True)
        return
    # 1. the grid, both splits, torch seed 0
    g = go([{"phase": "grid", "recipe": r, "split": sp, "seed": 0} for r in recipes for sp in ("seed", "genre")])
    first = score(g, [recipe_name(r) for r in recipes])
    top = sorted(first, key=first.get, reverse=True)[: args.top]
    finalists = [r for r in recipes if recipe_name(r) in top]
    if recipe_name(BASE) not in top:
        finalists.append(BASE)
    # 2. seeds 1 and 2 for the finalists
    g2 = go([{"phase": "seeds", "recipe": r, "split": sp, "seed": s} for r in finalists for sp in ("seed", "genre")
             for s in range(1, args.seeds)])
    final = score(g + g2, [recipe_name(r) for r in finalists])
    win = max(finalists, key=lambda r: final[recipe_name(r)])
    print(f"winner: {recipe_name(win)} (mean val AUPRC {final[recipe_name(win)]:.4f}); demo recipe "
          f"{final[recipe_name(BASE)]:.4f}", flush=True)
    # 3. the winner and the demo's recipe on the evaluation sets (reported only)
    go([{"phase": "eval", "recipe": r, "split": "seed", "seed": s, "eval": True, "role": role}
        for role, r in (("winner", win), ("demo", BASE)) for s in range(args.seeds)])
    print(f"done in {time.time() - t_start:.0f} s", flush=True)


# ----------------------------------------------------------------------------------------------------- report

def report(args) -> None:
    import numpy as np
    rs = [json.loads(x) for x in Path(args.results).read_text().splitlines() if x.strip()]
    by: dict[str, dict[str, list]] = {}
    for r in rs:
        if r["phase"] != "eval":
            by.setdefault(r["name"], {}).setdefault(r["split"], []).append(r["val"]["val_auprc"])
    f = lambda xs: f"{np.mean(xs):.3f}" + (f" ±{np.std(xs):.3f}" if len(xs) > 1 else "")  # noqa: E731
    rows = sorted(by.items(), key=lambda kv: -np.mean(kv[1]["seed"] + kv[1]["genre"]))
    lines = ["| recipe | runs | seed split val AUPRC | genre shift val AUPRC | score |", "|---|---:|---:|---:|---:|"]
    for n, d in rows:
        lines.append(f"| {n}{' (demo)' if n == recipe_name(BASE) else ''} | {len(d['seed'])} | {f(d['seed'])} | "
                     f"{f(d['genre'])} | {np.mean(d['seed'] + d['genre']):.3f} |")
    ev = [r for r in rs if "eval" in r]
    sets = sorted({s for r in ev for s in r["eval"]})
    lines += ["", "| recipe | val F1 / FPR (seed split) | threshold | "
              + " | ".join(f"{s} F1 / FPR / AUPRC" for s in sets) + " |",
              "|---|---|---:|" + "---|" * len(sets)]
    for role in dict.fromkeys(r["role"] for r in ev):
        rr = [r for r in ev if r["role"] == role]
        if not rr:
            continue
        nan = lambda x: float("nan") if x is None else x  # noqa: E731 (undefined: one label only)
        cell = lambda s: " / ".join(f"{np.mean([nan(r['eval'][s][k]) for r in rr]):.3f}"  # noqa: E731
                                    for k in ("f1", "fpr", "auprc"))
        who = role if role == rr[0]["name"] else f"{role}: {rr[0]['name']}"
        lines.append(f"| {who} ({len(rr)} seeds) | "
                     f"{np.mean([r['val']['val_f1'] for r in rr]):.3f} / "
                     f"{np.mean([r['val']['val_fpr'] for r in rr]):.3f} | "
                     f"{np.mean([r['val']['threshold'] for r in rr]):.3f} | " + " | ".join(cell(s) for s in sets) + " |")
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--out", default="runs/sweep")
    b = sub.add_parser("run")
    b.add_argument("--data", default="runs/sweep")
    b.add_argument("--out", default="runs/sweep/out")
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--phase", choices=("select", "transfer", "confirm"), default="select",
                   help="select: grid -> finalists -> eval (the protocol above); transfer / confirm: the TRANSFER / CONFIRM recipes")
    b.add_argument("--threads", type=int, default=2, help="torch threads per training process")
    b.add_argument("--top", type=int, default=3)
    b.add_argument("--seeds", type=int, default=3, help="torch seeds for the finalists and the evaluation phase")
    b.add_argument("--limit", type=int, default=0, help="first N rows of each file only (a smoke run on CPU)")
    b.add_argument("--max-recipes", type=int, default=0, help="first N recipes of the grid only (a smoke run)")
    c = sub.add_parser("report")
    c.add_argument("--results", required=True)
    args = p.parse_args(argv)
    {"prepare": prepare, "run": run, "report": report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
