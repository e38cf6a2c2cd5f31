"""Quality table: run the `guardray eval` harness for each baseline (and any extra models) on every evaluation set
in ../shared/data and render benchmarks/quality.md.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py

Add guardray rows without rerunning the baselines (their reports under benchmarks/out/ are reused):

    .venv/bin/python benchmarks/quality.py --reuse --model guardray-demo=runs/demo/checkpoint

`--model LABEL=SPEC` (repeatable; SPEC is anything `guardray eval --model` takes; LABEL defaults to SPEC) adds a row
group; `--baselines` picks the baselines (default: all three; `--baselines` with no names runs none). Each model's
full report (report.json/md, plots, per-row scores) lands in benchmarks/out/<label>/ (gitignored). Every model is
scored at its own fixed calibrated threshold, never a per-set best threshold.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardray.evaluate import BASELINES, evaluate  # noqa: E402

COLS = (("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("fpr", "FPR"), ("auprc", "AUPRC"),
        ("roc_auc", "ROC-AUC"), ("recall_at_1pct_fpr", "recall@1%FPR"))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _label_dir(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def render(reports: list[tuple[str, dict]], command: str, data_root: str) -> str:
    lines = [
        "# Quality: baselines (and guardray models) on the shared evaluation sets", "",
        "Regenerate (writes this file; full reports, plots and per-row scores in benchmarks/out/<model>/):", "",
        "```", command, "```", "",
        f"Data: every `<set>/eval.jsonl` under `{data_root}` (never trained on). Metrics are defined in "
        "guardray/core/metrics.py: F1, precision, recall and FPR at each model's ONE fixed threshold (below; not a "
        "per-set best threshold); AUPRC = average precision; recall@1%FPR = max recall over thresholds with "
        "FPR <= 1% (with fewer than 100 safe rows no false positive is allowed). n/a = undefined.", "",
        "| model | data set | n | unsafe | " + " | ".join(h for _, h in COLS) + " | texts/s |",
        "|---|---|---:|---:|" + "---:|" * len(COLS) + "---:|"]
    for label, rep in reports:
        for name, d in rep["datasets"].items():
            lines.append(f"| {label} | {name} | {d['n']} | {d['n_unsafe']} | "
                         + " | ".join(_fmt(d[k]) for k, _ in COLS)
                         + f" | {d['texts_per_second']:.0f} |")
    lines += ["", "## Models (what each was trained on, threshold)", ""]
    for label, rep in reports:
        lines.append(f"- **{label}** (`{rep['model']}`, threshold {rep['threshold']:.3f}, "
                     f"{rep['created_at']}): {rep['description']}")
    lines += ["", "## Reading the table", "",
              "- texts/s is scoring throughput after the model is loaded, on this machine "
              f"({platform.machine()}, {_cpu_note()}), which other jobs may have shared while it ran (each "
              "report.json records `load_avg_1m` beside `texts_per_second`): compare rows of one run only, and "
              "only roughly.",
              "- baseline:profanity (alt-profanity-check) was trained upstream partly on the Davidson corpus, so "
              "its davidson-hate-offensive row is contaminated; most Davidson `unsafe` rows are merely offensive "
              "tweets, not hazards in the guardrail sense.",
              "- xstest is a test of over-flagging: its safe half is prompts that merely sound unsafe (homonyms, "
              "figurative language, ...); per-type FPR is in each report.md.",
              "- baseline:tfidf-lr and baseline:knn-embed are trained here on the packaged seed prompts (short "
              "requests); the evaluation sets are other genres (long user texts, tweets, comments), so they "
              "transfer poorly: that is the gap guardray's synthetic data and adversarial rounds are meant to close.",
              "- Published reference points (prompt classification F1, from the papers, other models): OpenAI "
              "Moderation set - OpenAI API 0.790, Llama Guard 3-8B 0.797, ShieldGemma-9B 0.821; XSTest - Llama "
              "Guard 3-8B 0.884 (1B: 0.821).", ""]
    return "\n".join(lines)


def _cpu_note() -> str:
    import os
    return f"{os.cpu_count()} CPU cores"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--md", default=str(ROOT / "benchmarks" / "quality.md"))
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    p.add_argument("--model", action="append", default=[], metavar="LABEL=SPEC",
                   help="extra model to add as rows (checkpoint path, registry name or baseline:NAME)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse benchmarks/out/<label>/report.json when it covers the same data sets")
    p.add_argument("--threshold", type=float, default=None, help="override every model's threshold")
    a = p.parse_args(argv)

    root = Path(a.data_root)
    data = sorted(str(f.parent) for f in root.glob("*/eval.jsonl"))
    if not data:
        print(f"quality.py: no <set>/eval.jsonl under {root}; pass --data-root", file=sys.stderr)
        return 2
    models = [(f"baseline:{b}", f"baseline:{b}") for b in a.baselines]
    for m in a.model:
        label, _, spec = m.partition("=") if "=" in m else (m, "", m)
        models.append((label, spec))
    reports = []
    for label, spec in models:
        out = Path(a.out) / _label_dir(label)
        prev = out / "report.json"
        if a.reuse and prev.exists():
            rep = json.loads(prev.read_text())
            if rep.get("model") == spec and sorted(rep["datasets"]) == sorted(Path(d).name for d in data):
                print(f"[quality] {label}: reusing {prev}", flush=True)
                reports.append((label, rep))
                continue
        print(f"[quality] {label}: evaluating {spec} on {len(data)} sets", flush=True)
        reports.append((label, evaluate(spec, data, out, threshold=a.threshold)))
    cmd = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py" + "".join(
        f" --model {m}" for m in a.model) + (f" --threshold {a.threshold}" if a.threshold is not None else "")
    if a.baselines != list(BASELINES):
        cmd += " --baselines " + " ".join(a.baselines)
    Path(a.md).write_text(render(reports, cmd, "../shared/data"))
    print(f"[quality] wrote {a.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
