"""The quality ablation: what each stage of the paper's recipe is worth, one row per stage, on every set in
../shared/data, under one validation protocol. Writes the rows into benchmarks/quality.md (via quality.py) and a
compact "Ablation" table at its end.

    make demo                                                   # synth candidates + the adversarial rounds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ablation.py    # ~40 min on 2 cores (train + score 6 rows)

Rows (each trains all-MiniLM-L6-v2 with the demo's trainer block, Ray Train, 1 worker):

| row | training data |
|---|---|
| seeds-v1 | the 895 guardray-seeds-v1 seeds (their training part) |
| seeds-v2 | every packaged seed (v1 + v2 genres) |
| +operators | + label-preserving operator children of those seeds (configs/demo.yaml's synth.operator_* settings) |
| +synth-unfiltered | + the demo's LLM candidates (runs/demo/synth/v0/{augment,paraphrase,contrastive}) through the rules and dedup rounds only |
| +fidelity | + the same candidates through the demo's full curation (meaning and label rounds too) |
| +adversarial | the demo's final checkpoint (round-0 data of +fidelity, then the adversarial rounds; its own split) |
| random-B / s2l-B | `--selection`: B examples of the +fidelity pool drawn at random / by S2L (B = half the pool) |

Validation protocol, identical for rows 1-5 and 7: the seeds are split once (grouped by root seed, 15%, a benign
majority of at least 60%); the validation set is those seeds plus their operator children (what deployment sees:
framings, noise, padding), and no child of a validation seed is trained on. Early stopping and the calibrated
threshold both come from it; the evaluation sets only score. Nothing here is tuned on ../shared/data.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS_COLS = (("f1", "F1"), ("fpr", "FPR"), ("auprc", "AUPRC"))


def build_rows(args, cfg):
    from guardray.core.operators import apply_operators
    from guardray.core.records import read_examples
    from guardray.data import load_seeds
    from guardray.trainer import split_validation

    seeds = load_seeds()
    train_seeds, val_seeds = split_validation(seeds, cfg.data.val_fraction, seed=cfg.run.seed,
                                              safe_share=cfg.data.val_safe_share)
    s = cfg.synth
    ops = apply_operators(seeds, ops=s.operators, per_example=s.operator_per_seed, seed=cfg.run.seed)
    val_ids = {e.id for e in val_seeds}
    rnd = random.Random(f"{cfg.run.seed}:operate")
    picked = {e.id for e in seeds if rnd.random() < s.operator_fraction}  # the pipeline's `operate` draw
    ops_train = [e for e in ops if e.seed_id not in val_ids and e.seed_id in picked]
    val = val_seeds + [e for e in ops if e.seed_id in val_ids]
    demo = Path(args.demo)
    raw = []
    for st in ("augment", "paraphrase", "contrastive"):
        f = demo / "synth" / "v0" / st / "data.parquet"
        if f.exists():
            raw += read_examples(f).examples
    curated_f = demo / "synth" / "v0" / "curated" / "data.parquet"
    curated = read_examples(curated_f).examples if curated_f.exists() else []
    not_val = lambda exs: [e for e in exs if (e.seed_id or e.parent_id) not in val_ids]  # noqa: E731
    unfiltered = not_val(curate_unfiltered(cfg, seeds, raw)) if raw else []
    v1 = [e for e in train_seeds if e.source == "guardray-seeds-v1"]
    rows = {"seeds-v1": v1, "seeds-v2": train_seeds, "+operators": train_seeds + ops_train}
    if raw:
        rows["+synth-unfiltered"] = train_seeds + ops_train + unfiltered
    if curated:
        rows["+fidelity"] = train_seeds + ops_train + not_val(curated)
    facts = {"seeds": len(seeds), "train_seeds": len(train_seeds), "val": len(val),
             "val_unsafe_share": round(sum(e.unsafe for e in val) / max(1, len(val)), 3),
             "operator_children_train": len(ops_train), "synth_candidates": len(raw),
             "synth_unfiltered_kept": len(unfiltered), "synth_curated_kept": len(not_val(curated))}
    return rows, val, facts


def curate_unfiltered(cfg, seeds, raw):
    """The demo's candidates through rules + dedup only (no fidelity, no judge): the 'unfiltered' row."""
    from guardray.curator import CuratorPool
    from guardray.synth import read_texts
    ccfg = dataclasses.replace(cfg.curator, rounds=("rules", "dedup"))
    with CuratorPool(ccfg, cfg.resources, reference_texts=[e.text for e in seeds], judge_model="",
                     decontam_texts=read_texts(list(cfg.data.eval_sets)), progress=False) as pool:
        return pool.curate(raw, stage="ablation-unfiltered").kept


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default=str(ROOT / "runs" / "demo"), help="the demo run folder")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "ablation"))
    ap.add_argument("--only", default="", help="comma-separated subset of the row names")
    ap.add_argument("--selection", action="store_true", help="also the random-B and s2l-B rows")
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)

    from guardray.core.config import load_config
    from guardray.core.records import write_examples
    from guardray.ray_utils import init_ray
    from guardray.trainer import train_classifier

    cfg = load_config(args.config)
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
    done = json.loads(facts_file.read_text()).get("rows", {}) if facts_file.exists() else {}
    for name, (data, tcfg) in plan.items():
        if only and name not in only:
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
    final = Path(args.demo) / "checkpoint"
    if final.exists():
        done["+adversarial"] = {"path": str(final.resolve()), "note": "the demo's final checkpoint (own split)"}
    facts_file.write_text(json.dumps({"facts": facts, "rows": done}, indent=2))
    if args.no_eval:
        return 0
    order = [k for k in ["seeds-v1", "seeds-v2", "+operators", "+synth-unfiltered", "+fidelity", "+adversarial"]
             if k in done] + [k for k in done if k.startswith(("random-", "s2l-"))]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--reuse"]
    for k in order:
        cmd += ["--model", f"guardray:{k}={done[k]['path']}"]
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        append_table(order, done, facts)
    return rc


def append_table(order, done, facts) -> None:
    from benchmarks.quality import _label_dir
    md = ROOT / "benchmarks" / "quality.md"
    reports = {k: json.loads((ROOT / "benchmarks" / "out" / _label_dir(f"guardray:{k}") / "report.json").read_text())
               for k in order}
    sets = sorted(next(iter(reports.values()))["datasets"])
    head = "| row | n train | threshold | val F1 / FPR | " + " | ".join(f"{s} F1 / FPR / AUPRC" for s in sets) + " |"
    lines = ["", "## Ablation (benchmarks/ablation.py)", "",
             "One row per stage; F1 and FPR at the row's own calibrated threshold, AUPRC threshold-free. Rows "
             "other than +adversarial share one validation set (held-out seeds + their operator children, "
             f"{facts['val']} examples, {facts['val_unsafe_share']:.0%} unsafe); +adversarial is the demo's final "
             "checkpoint on its own split of the same protocol.", "",
             "```", "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ablation.py", "```", "",
             f"Facts: {json.dumps(facts)}", "", head, "|---|---:|---:|---:|" + "---:|" * len(sets)]
    for k in order:
        d, rep = done[k], reports[k]
        cells = []
        for s in sets:
            x = rep["datasets"][s]
            cells.append(" / ".join("n/a" if x.get(c) is None else f"{x[c]:.3f}" for c, _ in SETS_COLS))
        val = (f"{d['val_f1']:.3f} / {d['val_fpr']:.3f}" if d.get("val_f1") is not None else "(own split)")
        lines.append(f"| {k} | {d.get('n_train', '-')} | {rep['threshold']:.3f} | {val} | " + " | ".join(cells)
                     + " |")
    text = md.read_text()
    text = text.split("\n## Ablation (benchmarks/ablation.py)")[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    md.write_text(text)
    print(f"[ablation] appended the ablation table to {md}")


if __name__ == "__main__":
    raise SystemExit(main())
