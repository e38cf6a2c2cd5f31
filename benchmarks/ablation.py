"""The quality ablation: what each stage of the paper's recipe is worth, one row per stage, on every set in
../shared/data, under one validation protocol. Writes (or replaces) the "Ablation" section at the end of
benchmarks/quality.md; full per-row reports land in runs/ablation/eval/<row>/.

    make demo                                                   # synth candidates + the adversarial rounds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ablation.py    # ~40 min on 2 cores (train + score 6 rows)

Rows (each trains all-MiniLM-L6-v2 with the demo's trainer block, Ray Train, 1 worker):

| row | training data |
|---|---|
| seeds-v1 | the 895 guardray-seeds-v1 seeds (their training part) |
| seeds-v2 | the v1 + v2 seeds (v2: the genres of real traffic) |
| seeds-v3 | every packaged seed (v3: the same forms on both labels; v4: stories; v5: mentions and chatbot prompts; SEEDS.md) |
| +operators | + label-preserving operator children of those seeds (configs/demo.yaml's synth.operator_* settings) |
| +synth-unfiltered | + the demo's LLM candidates of the configured strategies (runs/demo/synth/v0/<strategy>) through the rules and dedup rounds only |
| +fidelity | + the same candidates through the configured curation (meaning and label rounds too) |
| +adversarial | the demo's final checkpoint (round-0 data of +fidelity, then the adversarial rounds; its own split) |
| random-B / s2l-B | `--selection`: B examples of the +fidelity pool drawn at random / by S2L (B = half the pool) |

A candidate seed part is measured before it is packaged by adding it to every row: `--extra-seeds
benchmarks/seed_parts/<part>.jsonl --only +operators --demo /nonexistent --out runs/abl-<part>-s<N>` beside the same
command without it, at run seeds 0-2 (`--config` with `run: {name: demo, seed: N}`); a run with `--out` elsewhere
or extra seeds writes its table to <out>/ablation.md and leaves benchmarks/quality.md alone.

Validation protocol, identical for every row but +adversarial: the seeds are split once (grouped by root seed,
15%, a benign majority of at least 60%); the validation set is those seeds plus their operator children (what
deployment sees: framings, noise, padding), and no child of a validation seed is trained on. Early stopping and the calibrated
threshold both come from it; the evaluation sets only score. Nothing here is tuned on ../shared/data.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS_COLS = (("f1", "F1"), ("fpr", "FPR"), ("auprc", "AUPRC"))


def build_rows(args, cfg):
    from guardray.core.operators import apply_operators
    from guardray.core.records import read_examples
    from guardray.data import SEEDS_PATH, load_padding, load_seeds
    from guardray.trainer import split_validation

    seeds = load_seeds([SEEDS_PATH, *args.extra_seeds])  # the prompt seeds (+ a candidate part, --extra-seeds)
    train_seeds, val_seeds = split_validation(seeds, cfg.data.val_fraction, seed=cfg.run.seed,
                                              safe_share=cfg.data.val_safe_share)
    s = cfg.synth
    ops = apply_operators(seeds, ops=s.operators, per_example=s.operator_per_seed, seed=cfg.run.seed,
                          padding=load_padding(s.padding))
    val_ids = {e.id for e in val_seeds}
    rnd = random.Random(f"{cfg.run.seed}:operate")
    picked = {e.id for e in seeds if rnd.random() < s.operator_fraction}  # the pipeline's `operate` draw
    ops_train = [e for e in ops if e.seed_id not in val_ids and e.seed_id in picked]
    val = val_seeds + [e for e in ops if e.seed_id in val_ids]
    demo = Path(args.demo)
    raw = []
    for st in cfg.synth.strategies:  # the demo's LLM candidates of the configured strategies
        f = demo / "synth" / "v0" / st / "data.parquet"
        if f.exists():
            raw += read_examples(f).examples
    not_val = lambda exs: [e for e in exs if (e.seed_id or e.parent_id) not in val_ids]  # noqa: E731
    want = lambda row: not args.only or row in args.only.split(",")  # noqa: E731
    # the demo's seeds-only judge (runs/demo/judge) for the judge round, as the demo curated with it
    judge = demo / "judge" if (demo / "judge" / "guardray.json").exists() else ""
    unfiltered = not_val(curate(cfg, seeds, raw, ("rules", "dedup"))) if raw and want("+synth-unfiltered") else []
    curated = not_val(curate(cfg, seeds, raw, cfg.curator.rounds, str(judge))) \
        if raw and (want("+fidelity") or args.selection) else []
    v1 = [e for e in train_seeds if e.source == "guardray-seeds-v1"]
    v2 = [e for e in train_seeds if e.source in ("guardray-seeds-v1", "guardray-seeds-v2")]
    rows = {"seeds-v1": v1, "seeds-v2": v2, "seeds-v3": train_seeds, "+operators": train_seeds + ops_train}
    if raw:
        rows["+synth-unfiltered"] = train_seeds + ops_train + unfiltered
    if curated:
        rows["+fidelity"] = train_seeds + ops_train + curated
    facts = {"seeds": len(seeds), "train_seeds": len(train_seeds), "val": len(val),
             "val_unsafe_share": round(sum(e.unsafe for e in val) / max(1, len(val)), 3),
             "operator_children_train": len(ops_train), "synth_candidates": len(raw),
             "synth_strategies": list(cfg.synth.strategies), "synth_unfiltered_kept": len(unfiltered),
             "synth_curated_kept": len(curated), "curation_judge": str(judge) or "none"}
    return rows, val, facts


def curate(cfg, seeds, raw, rounds, judge: str = ""):
    """The demo's candidates through `rounds` of the configured curation: rules + dedup only is the
    'unfiltered' row; the configured rounds (fidelity included, the judge round with `judge`) the '+fidelity'
    row."""
    from guardray.curator import CuratorPool
    from guardray.synth import read_texts
    ccfg = dataclasses.replace(cfg.curator, rounds=tuple(rounds))
    with CuratorPool(ccfg, cfg.resources, reference_texts=[e.text for e in seeds], judge_model=judge,
                     decontam_texts=read_texts(list(cfg.data.eval_sets)), progress=False,
                     label_reference=seeds) as pool:
        return pool.curate(raw, stage="ablation").kept


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default=str(ROOT / "runs" / "demo"), help="the demo run folder")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "ablation"))
    ap.add_argument("--only", default="", help="comma-separated subset of the row names")
    ap.add_argument("--selection", action="store_true", help="also the random-B and s2l-B rows")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--davidson-rows", type=int, default=5000,
                    help="score davidson-hate-offensive on a fixed stratified sample of this many rows (0 = all)")
    ap.add_argument("--extra-seeds", nargs="*", default=[], metavar="JSONL",
                    help="seed files added to the packaged seeds for every row: a candidate part measured before it "
                         "is packaged (e.g. benchmarks/seed_parts/v6-figurative.jsonl)")
    ap.add_argument("--tune-data", action="store_true",
                    help="only write runs/tune-data/seeds+operators.jsonl (the recipe search's data) and exit")
    args = ap.parse_args(argv)

    from guardray.core.config import load_config
    from guardray.core.records import write_examples
    from guardray.ray_utils import init_ray
    from guardray.trainer import train_classifier

    cfg = load_config(args.config)
    if args.tune_data:
        from guardray.core.operators import apply_operators
        from guardray.data import SEEDS_PATH, load_padding, load_seeds
        seeds = load_seeds([SEEDS_PATH, *args.extra_seeds])  # the prompt seeds (+ --extra-seeds)
        rnd = random.Random(f"{cfg.run.seed}:operate")  # the pipeline's `operate` draw
        picked = [e for e in seeds if rnd.random() < cfg.synth.operator_fraction]
        kids = apply_operators(picked, ops=cfg.synth.operators, per_example=cfg.synth.operator_per_seed,
                               seed=cfg.run.seed, padding=load_padding(cfg.synth.padding))
        write_examples(list(seeds) + kids, ROOT / "runs" / "tune-data" / "seeds+operators.jsonl")
        print(f"[ablation] {len(seeds)} seeds + {len(kids)} operator children -> runs/tune-data/")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    init_ray()
    rows, val, facts = build_rows(args, cfg)
    write_examples(val, out / "val.jsonl")
    t = cfg.trainer
    plan = {k: (v, t) for k, v in rows.items()}
    if args.selection and "+fidelity" in rows:
        pool = rows["+fidelity"]
        b = len(pool) // 2
        plan[f"random-{b}"] = (pool, dataclasses.replace(t, selection="random", selection_budget=b))
        plan[f"s2l-{b}"] = (pool, dataclasses.replace(t, selection="s2l", selection_budget=b))
    only = [x for x in args.only.split(",") if x]
    facts_file = out / "facts.json"
    old = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    done = old.get("rows", {})
    # counts of rows this run did not build (--only) keep the values of the run that built them
    kept_facts = {"synth_unfiltered_kept": "+synth-unfiltered", "synth_curated_kept": "+fidelity"}
    facts.update({k: old.get("facts", {})[k] for k, row in kept_facts.items()
                  if only and row not in only and not args.selection and k in old.get("facts", {})})
    for name, (data, tcfg) in plan.items():
        if only and name not in only and not (args.selection and name.startswith(("random-", "s2l-"))):
            continue
        folder = out / name.lstrip("+")
        t0 = time.perf_counter()
        res = train_classifier(tcfg, data, folder, resources=cfg.resources, seed=cfg.run.seed, val=val,
                               progress=False)
        done[name] = {"path": str(folder), "n_train": len(data), "threshold": res.threshold,
                      "val_f1": res.metrics.get("val_f1"), "val_fpr": res.metrics.get("val_fpr"),
                      "val_auprc": res.metrics.get("val_auprc"), "epochs": len(res.history),
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[ablation] {name}: {done[name]}", flush=True)
    r0 = Path(args.demo) / "classifier" / "round-0"
    if "+fidelity" not in done and (r0 / "guardray.json").exists():  # not trained here: the demo's own round 0
        done["+fidelity"] = {"path": str(r0.resolve()), "note": "the demo's round-0 checkpoint (own split)"}
    rep = Path(args.demo) / "report.json"
    if rep.exists():  # the demo's final checkpoint: round-0 data of +fidelity, then the adversarial rounds
        final = Path(json.loads(rep.read_text())["final_checkpoint"]).resolve()
        done["+adversarial"] = {"path": str(final), "note": "the demo's final checkpoint (own split)"}
    facts_file.write_text(json.dumps({"facts": facts, "rows": done}, indent=2))
    if args.no_eval:
        return 0
    order = [k for k in ["seeds-v1", "seeds-v2", "seeds-v3", "+operators", "+synth-unfiltered", "+fidelity", "+adversarial"]
             if k in done] + [k for k in done if k.startswith(("random-", "s2l-"))]
    from guardray.evaluate import evaluate
    sets = eval_sets(out, args.davidson_rows)
    reports = {}
    for k in order:
        rdir = out / "eval" / k.lstrip("+")
        prev = rdir / "report.json"
        stamp = rdir / "checkpoint.sha256"  # the same path may hold another checkpoint (a rerun of the demo)
        meta = Path(done[k]["path"]) / "guardray.json"
        digest = hashlib.sha256(meta.read_bytes()).hexdigest() if meta.exists() else ""
        if prev.exists() and json.loads(prev.read_text()).get("model") == done[k]["path"] and stamp.exists() \
                and stamp.read_text() == digest:
            reports[k] = json.loads(prev.read_text())
            continue
        print(f"[ablation] scoring {k} on {len(sets)} sets", flush=True)
        reports[k] = evaluate(done[k]["path"], sets, rdir, plots=False, progress=False)
        stamp.write_text(digest)
    # the file's table is the default run's; a side run (--out elsewhere, --extra-seeds) writes its own copy
    side = Path(args.out).resolve() != (ROOT / "runs" / "ablation").resolve() or args.extra_seeds
    append_table(order, done, facts, reports, args.davidson_rows, out / "ablation.md" if side else None)
    return 0


def eval_sets(out: Path, davidson_rows: int) -> list[str]:
    """Every set in ../shared/data; davidson-hate-offensive (24,783 tweets) as a fixed stratified sample of
    `davidson_rows` (0 = all), written under runs/ablation/evalsets (gitignored)."""
    root = ROOT.parent / "shared" / "data"
    sets = sorted(str(f.parent) for f in root.glob("*/eval.jsonl"))
    if not davidson_rows:
        return sets
    big = next((s for s in sets if Path(s).name == "davidson-hate-offensive"), None)
    if big is None:
        return sets
    rows = [json.loads(x) for x in (Path(big) / "eval.jsonl").read_text().splitlines()]
    if len(rows) > davidson_rows:
        rnd = random.Random(0)
        by = {lab: [r for r in rows if r["label"] == lab] for lab in ("safe", "unsafe")}
        rows = [r for lab, rs in by.items() for r in rnd.sample(rs, round(davidson_rows * len(rs) / len(rows)))]
    dst = out / "evalsets" / "davidson-hate-offensive"
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [str(dst) if s == big else s for s in sets]


def append_table(order, done, facts, reports, davidson_rows, dest: Path | None = None) -> None:
    """Write (or replace) the "Ablation" section at the end of benchmarks/quality.md (the rest stays as it is), or
    write the section alone to `dest`."""
    md = ROOT / "benchmarks" / "quality.md"
    sets = sorted(next(iter(reports.values()))["datasets"])
    head = "| row | n train | threshold | val F1 / FPR | " + " | ".join(f"{s} F1 / FPR / AUPRC" for s in sets) + " |"
    lines = ["", "## Ablation (benchmarks/ablation.py)", "",
             "One row per stage; F1 and FPR at the row's own calibrated threshold, AUPRC threshold-free. Rows not "
             "marked (own split) share one validation set (held-out seeds + their operator children, "
             f"{facts['val']} examples, {facts['val_unsafe_share']:.0%} unsafe); the demo's checkpoints (own split) "
             "were calibrated on the demo's split of the same protocol."
             + (f" davidson-hate-offensive is a fixed stratified sample of {davidson_rows} of its 24,783 tweets "
                "(seed 0), to keep the run short." if davidson_rows else ""), "",
             "```", "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ablation.py", "```", "",
             f"Facts: {json.dumps(facts)}", "", head, "|---|---:|---:|---:|" + "---:|" * len(sets)]
    for k in order:
        d, rep = done[k], reports[k]
        cells = []
        for s in sets:
            x = rep["datasets"][s]
            cells.append(" / ".join("n/a" if x.get(c) is None else f"{x[c]:.3f}" for c, _ in SETS_COLS))
        if d.get("val_f1") is None:  # a demo checkpoint: its own split's metrics, from its guardray.json
            meta = json.loads((Path(d["path"]) / "guardray.json").read_text())
            vm = meta.get("val_metrics", {})
            d = {**d, "val_f1": vm.get("val_f1"), "val_fpr": vm.get("val_fpr"),
                 "n_train": meta.get("train_summary", {}).get("train", {}).get("n", "-")}
        val = f"{d['val_f1']:.3f} / {d['val_fpr']:.3f}" + (" (own split)" if d.get("note") else "")
        k = k + (" (demo)" if d.get("note") else "")
        lines.append(f"| {k} | {d.get('n_train', '-')} | {rep['threshold']:.3f} | {val} | " + " | ".join(cells)
                     + " |")
    if dest is not None:
        dest.write_text("\n".join(lines).lstrip("\n") + "\n")
        print(f"[ablation] wrote the table to {dest} (benchmarks/quality.md keeps the default run's)")
        return
    text = md.read_text()
    text = text.split("\n## Ablation (benchmarks/ablation.py)")[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    md.write_text(text)
    print(f"[ablation] appended the ablation table to {md}")


if __name__ == "__main__":
    raise SystemExit(main())
