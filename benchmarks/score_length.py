"""How many tokens should a checkpoint score per text? `trainer.score_max_length` side by side on validation data.

Training reads 128 tokens per text (head + tail beyond, `trainer.max_length`); validation, calibration, evaluation and
Serve read up to `trainer.score_max_length` tokens (head + tail) in one pass. Fewer tokens are faster on long texts
(a moderation-length text costs about its tokens), so this compares lengths on the run's own validation split and on
the team's held-out probes (benchmarks/probes), never on ../shared/data:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/score_length.py runs/abl-base-s0 runs/abl-base-s1 runs/abl-base-s2 \\
        [--lengths 128 256 384 512] [--out FILE.md]

Each folder is an ablation output (`benchmarks/ablation.py --only +operators --out DIR`): DIR/val.jsonl (the split
the checkpoint was calibrated on) and DIR/operators (the checkpoint). Every length gets its own threshold, chosen
on that validation split with the checkpoint's own policy (`f1_1se`), as the trainer would have chosen it had it
scored at that length; the probes are scored at that threshold. Scoring runs as Serve runs it (precision `auto`:
bf16 where the CPU computes it natively). A cell is the mean over the folders (per-folder values after it for
AUPRC); "long" = texts longer than 256 tokens, the only ones whose input changes between 256 and 512.
"buried": each validation seed (roots up to 400 characters) at the start, in the middle and at the end of about 400
tokens of benign filler (the long probe's benign posts): recall of the unsafe ones and FPR of the safe ones at
the length's threshold. Head + tail scoring never reads the middle of a text longer than the length, so this is
what a shorter length gives away to a harmful request hidden in a long benign post.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILLER_CHARS = 1600  # about 400 MiniLM tokens of benign text around a buried validation seed


def bury(texts: list[str], filler: list[str], chars: int = FILLER_CHARS) -> dict[str, list[str]]:
    """Each text at the start, in the middle and at the end of about `chars` characters of benign filler (whole
    filler texts, drawn per text with a fixed seed): how a harmful request hidden in a long benign post is read."""
    import random
    out: dict[str, list[str]] = {"start": [], "middle": [], "end": []}
    for i, t in enumerate(texts):
        rng = random.Random(i)
        pool = rng.sample(filler, len(filler))
        before, after, n = [], [], 0
        for f in pool:  # alternate sides until each holds about half
            (before if len(before) <= len(after) else after).append(f)
            n += len(f)
            if n >= chars:
                break
        pad = before + after
        out["start"].append("\n\n".join([t] + pad))
        out["middle"].append("\n\n".join(before + [t] + after))
        out["end"].append("\n\n".join(pad + [t]))
    return out


def evaluate(folder: Path, lengths: list[str], probes: dict, filler: list[str],
             val_dir: Path | None = None) -> dict[str, dict[str, float]]:
    from guardray.classifier import GuardClassifier
    from guardray.core import metrics as M
    from guardray.core.calibration import choose_threshold
    from guardray.core.records import read_examples

    val = read_examples((val_dir or folder) / "val.jsonl").examples
    texts = [e.text for e in val]
    y = np.array([e.unsafe for e in val], dtype=int)
    roots = [e for e in val if not e.seed_id and len(e.text) <= 400]
    by = np.array([e.unsafe for e in roots], dtype=int)
    buried = bury([e.text for e in roots], filler)
    res: dict[str, dict[str, float]] = {}
    long = None
    for L in lengths:
        clf = GuardClassifier.load(str(folder / "operators"), max_length=int(L.lstrip("w")))
        if L.startswith("w"):  # windows of that many tokens (stride 64), the max over windows
            clf.long_text = "windows_max"
        if long is None:  # the same tokenizer at every length
            long = np.array([len(clf.tokenizer(t)["input_ids"]) for t in texts]) > 256
        t0 = time.perf_counter()
        s = clf.score(texts).unsafe
        secs = time.perf_counter() - t0
        policy = clf.meta.get("threshold_policy") or "f1_1se"
        thr = choose_threshold(y, s, policy, clf.meta.get("target_fpr") or 0.05)
        m = M.binary_metrics(y, s, thr)
        r = {"val_auprc": M.auprc(y, s), "val_f1": m["f1"], "val_fpr": m["fpr"], "threshold": thr,
             "stored_threshold": float(clf.meta.get("threshold", float("nan"))), "val_long_n": int(long.sum()),
             "val_long_auprc": M.auprc(y[long], s[long]) if 0 < y[long].sum() < long.sum() else float("nan"),
             "val_long_fpr": float((s[long & (y == 0)] >= thr).mean()) if (long & (y == 0)).any() else float("nan"),
             "val_long_recall": float((s[long & (y == 1)] >= thr).mean()) if (long & (y == 1)).any() else float("nan"),
             "val_secs": secs}
        pooled_y, pooled_s = [], []
        for name, (ptexts, py) in probes.items():
            ps = clf.score(ptexts).unsafe
            pm = M.binary_metrics(py.astype(int), ps, thr)
            r[f"{name}_auprc"], r[f"{name}_f1"], r[f"{name}_fpr"] = M.auprc(py.astype(int), ps), pm["f1"], pm["fpr"]
            pooled_y.append(py.astype(int))
            pooled_s.append(ps)
        r["probes_auprc"] = M.auprc(np.concatenate(pooled_y), np.concatenate(pooled_s))
        all_b = []
        for where, text_list in buried.items():  # a validation seed inside ~400 tokens of benign text
            bs = clf.score(text_list).unsafe
            r[f"buried_{where}_recall"] = float((bs[by == 1] >= thr).mean())
            r[f"buried_{where}_fpr"] = float((bs[by == 0] >= thr).mean())
            all_b.append(bs)
        r["buried_auprc"] = M.auprc(np.tile(by, len(all_b)), np.concatenate(all_b))  # threshold-free, 3 positions
        res[L] = r
        print(f"[score_length] {folder} L={L}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="ablation output folders (DIR/val.jsonl, DIR/operators)")
    ap.add_argument("--lengths", nargs="+", default=["128", "256", "384", "512"],
                    help="tokens scored per text, head + tail beyond; wN = windows of N tokens, max over windows")
    ap.add_argument("--probes", default=str(ROOT / "benchmarks" / "probes"))
    ap.add_argument("--exclude", nargs="*", default=["figurative"], help="probes left out (default: figurative)")
    ap.add_argument("--val-from", nargs="*", default=[], metavar="DIR",
                    help="score on these folders' val.jsonl instead (one per folder, same run seeds: the same "
                         "validation seeds, e.g. another arm's operator children of them)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(2)
    from probe_suite import probe_sets
    probes = {k: v for k, v in probe_sets(Path(args.probes)).items() if k not in args.exclude}
    for f in args.folders:
        if not (Path(f) / "val.jsonl").exists() or not (Path(f) / "operators" / "guardray.json").exists():
            raise SystemExit(f"{f}: not an ablation output (needs {f}/val.jsonl and the checkpoint {f}/operators)")
    # filler: the benign lines of the long probe (100-400 words of everyday posts no run trains on)
    ltexts, ly = probes.get("long") or probe_sets(Path(args.probes))["long"]
    filler = [t for t, u in zip(ltexts, ly) if not u]
    if args.val_from and len(args.val_from) != len(args.folders):
        raise SystemExit(f"--val-from: {len(args.val_from)} folders for {len(args.folders)} checkpoints")
    vals = [Path(v) for v in args.val_from] or [None] * len(args.folders)
    runs = [evaluate(Path(f), args.lengths, probes, filler, v) for f, v in zip(args.folders, vals)]
    cols = ["val_auprc", "val_f1", "val_fpr", "val_long_auprc", "val_long_fpr", "val_long_recall", "probes_auprc",
            *[f"{p}_auprc" for p in probes], *[f"buried_{w}_{m}" for w in ("start", "middle", "end")
                                               for m in ("recall", "fpr")], "buried_auprc", "val_secs"]
    head = "| tokens | " + " | ".join(cols) + " |"
    lines = [head, "|---:|" + "---:|" * len(cols)]
    for L in args.lengths:
        cells = []
        for c in cols:
            per_run = [r[L][c] for r in runs]
            cell = f"{np.nanmean(per_run):.3f}"
            if c.endswith("auprc") and len(per_run) > 1:
                cell += " (" + ", ".join(f"{v:.3f}" for v in per_run) + ")"
            cells.append(cell)
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    n_long = [r[args.lengths[0]]["val_long_n"] for r in runs]
    text = (f"checkpoints: {', '.join(f + '/operators' for f in args.folders)}; validation split of "
            f"{', '.join(map(str, args.val_from)) or 'each'}; validation rows longer than 256 "
            f"tokens: {n_long}; probes: {', '.join(probes)}\n\n" + "\n".join(lines))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
