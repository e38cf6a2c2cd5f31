"""Response classification, measured: does one classifier learn to judge assistant responses (the role-marker
input, guardray.core.records.classifier_input) beside prompts, and what does training on responses do to prompt
quality? Writes (or replaces) the "Responses" section of benchmarks/quality.md; reports land in runs/responses/.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/responses.py      # ~20 min on 2 cores (2 trainings + scoring)

Data: the packaged prompt seeds (guardray/data/seeds.jsonl) and the team's response seeds
(guardray/data/responses.jsonl). One grouped split (a prompt seed and its responses stay together) holds out 20%
of the groups as the test split - the team's own data, not a public benchmark. From the rest, the usual validation
split (15%, grouped, benign majority) calibrates the threshold and early stopping in both arms.

The team's multi-turn conversation seeds (guardray/data/conversations.jsonl: the last user turn judged in its
context) get a grouped 80/20 split of their own; the held-out 20% is a second test file.

Arms (all-MiniLM-L6-v2, configs/demo.yaml's trainer block, Ray Train, 1 worker, one validation split):
  prompts                             the training prompts only
  prompts+responses                   the same prompts plus the training responses
  prompts+responses+conversations     ... plus the training 80% of the conversations
All are scored on the held-out prompts, responses and conversations (separate rows) and on every set in
../shared/data (prompt classification: is it hurt by learning the second task?). Nothing is tuned on the test
splits or ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "responses"))
    ap.add_argument("--davidson-rows", type=int, default=5000)
    args = ap.parse_args(argv)

    from ablation import eval_sets
    from guardray.core.config import load_config
    from guardray.core.records import read_examples, write_examples
    from guardray.core.splits import split_validation
    from guardray.data import SEEDS_PATH
    from guardray.evaluate import evaluate
    from guardray.ray_utils import init_ray
    from guardray.trainer import train_classifier

    cfg = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = read_examples(SEEDS_PATH).examples
    responses = read_examples(SEEDS_PATH.with_name("responses.jsonl")).examples
    rest, test = split_validation(prompts + responses, 0.2, seed=101)
    train, val = split_validation(rest, cfg.data.val_fraction, seed=cfg.run.seed, safe_share=cfg.data.val_safe_share)
    test_file = write_examples(test, out / "test" / "team-held-out.jsonl")
    convs = read_examples(SEEDS_PATH.with_name("conversations.jsonl")).examples
    conv_train, conv_test = split_validation(convs, 0.2, seed=101)
    conv_file = write_examples(conv_test, out / "test" / "team-held-out-conversations.jsonl")
    write_examples(val, out / "val.jsonl")
    arms = {"prompts": [e for e in train if e.role == "user"], "prompts+responses": train,
            "prompts+responses+conversations": train + conv_train}
    init_ray()
    facts = {"train_prompts": len(arms["prompts"]), "train_responses": len(train) - len(arms["prompts"]),
             "val": len(val), "val_responses": sum(e.role == "assistant" for e in val),
             "test_prompts": sum(e.role == "user" for e in test),
             "test_responses": sum(e.role == "assistant" for e in test),
             "test_responses_unsafe": sum(e.role == "assistant" and e.unsafe for e in test),
             "train_conversations": len(conv_train), "test_conversations": len(conv_test),
             "test_conversations_unsafe": sum(e.unsafe for e in conv_test)}
    print(f"[responses] {facts}", flush=True)
    sets = [str(test_file), str(conv_file)] + eval_sets(out, args.davidson_rows)
    rows = {}
    for name, data in arms.items():
        folder = out / name
        t0 = time.perf_counter()
        if not (folder / "guardray.json").exists():
            train_classifier(cfg.trainer, data, folder, resources=cfg.resources, seed=cfg.run.seed, val=val,
                             progress=False)
        meta = json.loads((folder / "guardray.json").read_text())
        rep = evaluate(str(folder), sets, out / "eval" / name, plots=False, progress=False)
        rows[name] = {"n_train": len(data), "threshold": meta["threshold"],
                      "val_auprc": meta["val_metrics"].get("val_auprc"), "report": rep,
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[responses] {name}: {len(data)} train, threshold {meta['threshold']:.3f}, "
              f"{rows[name]['seconds']} s", flush=True)
    write_section(rows, facts, args)
    return 0


def write_section(rows: dict, facts: dict, args) -> None:
    names = list(next(iter(rows.values()))["report"]["datasets"])
    head = "| arm | n train | threshold | val AUPRC | " + " | ".join(f"{n} F1 / FPR / AUPRC" for n in names) + " |"
    lines = ["## Responses (benchmarks/responses.py)", "",
             "Response classification beside prompt classification, one classifier (role-marker input). The "
             "test splits (`team-held-out:*`, `team-held-out-conversations`) are **the team's own data**: 20% of the "
             "groups of the packaged prompt seeds and response seeds (a prompt and its responses stay in one "
             "group), and 20% of the multi-turn conversation seeds, held out before anything trained; they are not "
             "a public benchmark. All arms share one validation split (prompts and responses; no conversations). F1 and FPR at each arm's own calibrated threshold "
             "(validation split of the rest, grouped, benign majority); AUPRC threshold-free.", "",
             "```", "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/responses.py", "```", "",
             f"Facts: {json.dumps(facts)}", "",
             "The `prompts` arm calibrates on the same validation split, whose 55 responses it never trained on, so "
             "its threshold is off for them: compare it by AUPRC. The conversation test split is 36 rows (18 "
             "unsafe): read its numbers as rough.", "",
             head, "|---|---:|---:|---:|" + "---:|" * len(names)]
    for arm, r in rows.items():
        cells = []
        for n in names:
            d = r["report"]["datasets"][n]
            cells.append(" / ".join("n/a" if d.get(k) is None else f"{d[k]:.3f}" for k in ("f1", "fpr", "auprc")))
        lines.append(f"| {arm} | {r['n_train']} | {r['threshold']:.3f} | {r['val_auprc']:.3f} | "
                     + " | ".join(cells) + " |")
    q = ROOT / "benchmarks" / "quality.md"
    text = q.read_text()
    start = text.find("## Responses (benchmarks/responses.py)")
    if start >= 0:
        nxt = text.find("\n## ", start + 5)
        text = text[:start].rstrip() + ("\n\n" + text[nxt + 1:] if nxt >= 0 else "")
    q.write_text(text.rstrip() + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
