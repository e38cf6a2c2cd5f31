"""Robustness to cheap obfuscation: does input canonicalisation (guardray.core.normalize) keep a guard from being
fooled by leetspeak, letter spacing and look-alike letters, without costing accuracy on real data?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness.py [--model runs/demo/classifier/round-2]

Side by side in one run, one checkpoint, raw text (normalize=False) vs canonical text (normalize=True):
- per label-preserving operator (guardray.core.operators, not the prompt-attack frame), its child of every
  validation seed of the run (the seeds the checkpoint validated on and never trained on): *flipped* = the share
  of seeds the checkpoint gets right whose child it gets wrong, at its calibrated threshold;
- every set in ../shared/data: F1 at the threshold and AUPRC (evaluation only; nothing is tuned on them), and how
  many texts the canonicalisation changes at all.
Writes benchmarks/robustness.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "classifier" / "round-2"))
    ap.add_argument("--run", default="", help="the run whose validation seeds to perturb (default: the model's)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "robustness.md"))
    args = ap.parse_args(argv)
    from sklearn.metrics import average_precision_score, f1_score
    from guardray.classifier import GuardClassifier
    from guardray.core.config import load_config
    from guardray.core.normalize import normalize
    from guardray.core.operators import OPERATORS, apply_operator
    from guardray.core.records import read_many
    from guardray.core.splits import split_validation
    from guardray.data import single_prompts

    cfg = load_config(args.config)
    run = Path(args.run) if args.run else Path(args.model).resolve().parents[1]
    train = read_many([run / "data" / "train-round-0.parquet"]).examples
    _, val = split_validation(train, cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    seeds = [e for e in single_prompts(val) if e.stage == "seed"]
    raw = GuardClassifier.load(args.model, normalize=False)
    canon = GuardClassifier.load(args.model, normalize=True)
    thr = raw.threshold
    y = np.array([e.unsafe for e in seeds])
    right = {}
    for name, clf in (("raw", raw), ("canonical", canon)):
        s = clf.score([e.text for e in seeds]).unsafe
        right[name] = np.where(y, s >= thr, s < thr)
    rows = []
    for op in [o for o in OPERATORS if not OPERATORS[o].makes_unsafe]:
        texts = [apply_operator(e, op, seed=cfg.run.seed + 77).text for e in seeds]
        changed = sum(normalize(t) != t for t in texts)
        row = {"operator": op, "n": len(texts), "changed": changed}
        for name, clf in (("raw", raw), ("canonical", canon)):
            s = clf.score(texts).unsafe
            row[name] = float((np.where(y, s < thr, s >= thr) & right[name]).sum() / max(1, right[name].sum()))
        rows.append(row)
        print(json.dumps(row), flush=True)
    sets = []
    for f in sorted(DATA.glob("*/eval.jsonl")):
        recs = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if len(recs) > 5000:  # davidson: a fixed stratified-enough sample keeps the run short
            recs = recs[:: len(recs) // 5000 + 1]
        texts = [r["text"] for r in recs]
        yy = np.array([r["label"] == "unsafe" for r in recs])
        changed = sum(normalize(t) != t for t in texts)
        row = {"set": f.parent.name, "n": len(texts), "changed": changed}
        for name, clf in (("raw", raw), ("canonical", canon)):
            s = clf.score(texts).unsafe if (name == "raw" or changed) else row["raw_scores"]
            row["raw_scores"] = s if name == "raw" else row["raw_scores"]
            row[name] = {"f1": float(f1_score(yy, s >= thr)), "auprc": float(average_precision_score(yy, s))}
        row.pop("raw_scores")
        sets.append(row)
        print(json.dumps(row), flush=True)
    md = [f"# Robustness to cheap obfuscation: raw vs canonical input (`guardray.core.normalize`)", "",
          "Regenerate:", "", "```", f"HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness.py --model "
          f"{Path(args.model).resolve().relative_to(ROOT) if Path(args.model).resolve().is_relative_to(ROOT) else args.model}",
          "```", "",
          f"Checkpoint `{args.model}` at its calibrated threshold {thr:.3f}; {len(seeds)} validation seeds of "
          f"`{run.name}` (never trained on), {int(right['raw'].sum())} of them classified right on raw input and "
          f"{int(right['canonical'].sum())} on canonical input. {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} CPUs.", "",
          "## Operator children of the validation seeds: flipped (seed right, child wrong)", "",
          "| operator | children | changed by canonicalisation | flipped raw | flipped canonical |",
          "|---|---:|---:|---:|---:|"]
    md += [f"| {r['operator']} | {r['n']} | {r['changed']} | {r['raw']:.3f} | {r['canonical']:.3f} |" for r in rows]
    md += [f"| **mean** | | | {np.mean([r['raw'] for r in rows]):.3f} | "
           f"{np.mean([r['canonical'] for r in rows]):.3f} |", "",
           "## Evaluation sets (../shared/data; davidson-hate-offensive: every 5th row)", "",
           "| set | n | texts changed | F1 raw | F1 canonical | AUPRC raw | AUPRC canonical |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['set']} | {r['n']} | {r['changed']} | {r['raw']['f1']:.3f} | {r['canonical']['f1']:.3f} | "
           f"{r['raw']['auprc']:.3f} | {r['canonical']['auprc']:.3f} |" for r in sets]
    md += ["", "Reading: only the operators that disguise words (leetspeak, spacing, homoglyphs) are changed by "
           "the canonicalisation; framings, padding and transcripts keep the words as they are, so their flips "
           "are the classifier's own. The operators are the team's, so the first table measures the defence "
           "against the kind of disguise it targets, not against an unseen attacker; the evaluation sets show "
           "what it costs on real text."]
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
