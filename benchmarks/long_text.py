"""Long texts: how should a text longer than the model window be scored? Compared on the run's own validation split
(never on an evaluation set), for one checkpoint, side by side in one run:

- `head_tail`: one input, the first quarter + last three quarters of the window (what training sees,
  guardray.trainer.encode; what the threshold was calibrated on);
- `windows_max`: overlapping windows (stride 64), the max over windows (the serving and evaluation path);
- `windows_mean`: the same windows, their mean;
- `head_tail_{2x,4x}`: one input of 2x / 4x the trained window (MiniLM has 512 positions).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/long_text.py --run runs/demo --out benchmarks/long_text.md

The validation split is rebuilt from `runs/NAME/data/train-round-0.parquet` with the run's config (the pipeline's
split: grouped by root seed, benign majority) and checked against the checkpoint's model card. Each variant gets
its own best-F1 threshold on that split. `--eval` also scores the shared evaluation sets at those thresholds,
reported for information only (the choice is made on validation).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def score_variants(clf, texts: list[str], window: int, batch_size: int = 32) -> dict[str, np.ndarray]:
    import torch
    from guardray.train_steps import encode
    tok, model = clf.tokenizer, clf.model
    out: dict[str, np.ndarray] = {}

    def forward(items: list[dict]) -> np.ndarray:
        order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
        res = np.zeros(len(items), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                b = tok.pad([items[i] for i in idx], return_tensors="pt")
                b = {k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                res[idx] = torch.sigmoid(model(**b).logits[:, 0].float()).numpy()
        return res

    rows = [{"text": t} for t in texts]
    out["head_tail"] = forward(encode(tok, rows, window))
    for k in (2, 4):
        out[f"head_tail_{k}x"] = forward(encode(tok, rows, min(window * k, 512)))
    enc = tok(texts, truncation=True, max_length=window, stride=min(64, window // 2), return_overflowing_tokens=True)
    owner = np.asarray(enc["overflow_to_sample_mapping"])
    items = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
             for i in range(len(owner))]
    w = forward(items)
    mx = np.zeros(len(texts), dtype=np.float32)
    np.maximum.at(mx, owner, w)
    out["windows_max"] = mx
    out["windows_mean"] = np.bincount(owner, w, len(texts)) / np.bincount(owner, minlength=len(texts))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--round", default="0", help="checkpoint round-N of the run")
    ap.add_argument("--eval", action="store_true", help="also score ../shared/data sets (information only)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(2)
    from guardray.classifier import GuardClassifier
    from guardray.core import metrics as M
    from guardray.core.config import load_config
    from guardray.core.records import read_many
    from guardray.core.splits import split_validation

    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    ckpt = run / "classifier" / f"round-{args.round}"
    clf = GuardClassifier.load(str(ckpt))
    window = clf.max_length
    examples = read_many([run / "data" / "train-round-0.parquet"]).examples
    _, val = split_validation(examples, cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    card_n = clf.meta.get("train_summary", {}).get("val", {}).get("n")
    if card_n is not None and card_n != len(val):
        raise SystemExit(f"rebuilt validation split has {len(val)} rows, the model card says {card_n}")
    texts = [e.text for e in val]
    y = np.array([e.unsafe for e in val], dtype=int)
    ntok = np.array([len(clf.tokenizer(t)["input_ids"]) for t in texts])
    long = ntok > window
    scores = score_variants(clf, texts, window)
    sets = {}
    if args.eval:
        for p in sorted(Path("../shared/data").glob("*/eval.jsonl")):
            rows = [json.loads(line) for line in p.open()]
            if p.parent.name == "davidson-hate-offensive":
                rows = [rows[i] for i in np.random.default_rng(0).choice(len(rows), 3000, replace=False)]
            sets[p.parent.name] = (np.array([r["label"] == "unsafe" for r in rows], dtype=int),
                                   score_variants(clf, [r["text"] for r in rows], window))
            print(f"scored {p.parent.name}", flush=True)
    head = ("| variant | val AUPRC | val F1 / FPR | long val rows: AUPRC | long val safe FPR | threshold |"
            + "".join(f" {s} F1 / FPR / AUPRC |" for s in sets))
    lines = [head, "|---|---:|---:|---:|---:|---:|" + "---:|" * len(sets)]
    for name, s in scores.items():
        thr = M.best_f1_threshold(y, s)[0]
        at = M.binary_metrics(y, s, thr)
        lv = M.auprc(y[long], s[long]) if long.any() and 0 < y[long].sum() < long.sum() else None
        lsafe = long & (y == 0)
        lfpr = float((s[lsafe] >= thr).mean()) if lsafe.any() else float("nan")
        cells = []
        for ys, sv in sets.values():
            m = M.binary_metrics(ys, sv[name], thr)
            cells.append(f" {m['f1']:.3f} / {m['fpr']:.3f} / {M.auprc(ys, sv[name]):.3f} |")
        lines.append(f"| {name} | {M.auprc(y, s):.3f} | {at['f1']:.3f} / {at['fpr']:.3f} | "
                     f"{lv if lv is None else round(lv, 3)} | {lfpr:.3f} | {thr:.3f} |" + "".join(cells))
    meta = (f"checkpoint `{ckpt}` (window {window} tokens); validation split {len(val)} rows "
            f"({int(y.sum())} unsafe), {int(long.sum())} longer than the window ({int((long & (y == 1)).sum())} "
            f"unsafe); thresholds: best F1 on that split, per variant")
    print(meta + "\n" + "\n".join(lines))
    if args.out:
        Path(args.out).write_text(
            "# Long texts: scoring variants on the validation split\n\nRerun:\n\n```\nHF_HUB_OFFLINE=1 "
            f".venv/bin/python benchmarks/long_text.py --run {args.run} --round {args.round}"
            + (" --eval" if args.eval else "") + f" --out {args.out}\n```\n\n" + meta + "\n\n" + "\n".join(lines)
            + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
