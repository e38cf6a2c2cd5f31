"""The pipeline report: runs/NAME/report.json, report.md and plots of ASR and F1 by round."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def write_pipeline_report(report: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rounds = report["rounds"]
    sets = sorted({k for r in rounds for k in (r.get("eval") or {})})
    md = [f"# guardray run `{report['run']}`", "",
          f"Final checkpoint: `{report['final_checkpoint']}` (threshold {_fmt(report['threshold'])}); "
          f"{report['seconds'] / 60:.1f} min.", "",
          "ASR = share of fresh attacks on held-out seeds that fool the classifier while keeping the seed's "
          "meaning and label (our definition; see guardray/pipeline.py). *Before* = against the classifier the "
          "round attacked; *after* = against the classifier retrained on the round's harvest.", "",
          "## By round", "",
          "| round | train examples | harvested | curated | ASR before | ASR after | val F1 |"
          + "".join(f" F1 {s} |" for s in sets),
          "|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(sets)]
    for r in rounds:
        ev = r.get("eval") or {}
        md.append(f"| {r['round']} | {r.get('n_train', '-')} | {r.get('harvested', '-')} | {r.get('curated', '-')} "
                  f"| {_fmt(r.get('asr_before_retrain'))} | {_fmt(r.get('asr_after_retrain'))} "
                  f"| {_fmt((r.get('val') or {}).get('val_f1'))} |"
                  + "".join(f" {_fmt((ev.get(s) or {}).get('f1'))} |" for s in sets))
    kept = [str(r["round"]) for r in rounds if r.get("retrained") is False]
    if kept:
        md += ["", f"Round(s) {', '.join(kept)} harvested no adversarial example, so the classifier was not "
               "retrained: its row repeats the previous round's classifier (ASR after = before)."]
    if sets:
        md += ["", "## Evaluation sets (final round, at the calibrated threshold)", "",
               "| set | n | F1 | precision | recall | FPR | AUPRC | recall@1%FPR |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        last = rounds[-1].get("eval") or {}
        for s in sets:
            d = last.get(s) or {}
            md.append(f"| {s} | {d.get('n', '-')} | " + " | ".join(_fmt(d.get(k)) for k in
                      ("f1", "precision", "recall", "fpr", "auprc", "recall_at_1pct_fpr")) + " |")
    comp_rounds = [r for r in rounds if r.get("reward_components")]
    if comp_rounds:
        keys = list(comp_rounds[0]["reward_components"])
        md += ["", "## Reward components (mean over the round's rollouts)", "",
               "| round | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        for r in comp_rounds:
            md.append(f"| {r['round']} | " + " | ".join(_fmt(r['reward_components'][k]) for k in keys) + " |")
        md += ["", "## PPO updates", "", "| round | update | mean reward | policy loss | value loss | KL | clip frac |",
               "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in comp_rounds:
            for i, s in enumerate(r.get("ppo", [])):
                md.append(f"| {r['round']} | {i + 1} | {_fmt(s.get('mean_reward'))} | {_fmt(s.get('policy_loss'))} "
                          f"| {_fmt(s.get('value_loss'))} | {_fmt(s.get('kl'), 4)} | {_fmt(s.get('clipfrac'))} |")
        md += ["", "## Successful attacks (sample per round)", ""]
        for r in comp_rounds:
            md.append(f"### Round {r['round']}")
            if not r.get("samples"):
                md.append("(none among the fresh attacks)")
            for s in r.get("samples", []):
                md.append(f"- [{s['label']}, score {s['unsafe_score']}] `{s['seed'][:100]}` -> "
                          f"`{s['attack'][:160]}`")
            md.append("")
    md += ["", "Plots: `asr_by_round.png`, `f1_by_round.png`; per-round evaluation reports under `eval/round-N/`."]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")
    _plots(rounds, sets, run_dir)


def _plots(rounds: list[dict], sets: list[str], run_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    adv = [r for r in rounds if r.get("asr_before_retrain") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if adv:
        xs = [r["round"] for r in adv]
        ax.plot(xs, [r["asr_before_retrain"] for r in adv], "o-", label="before retraining")
        ax.plot(xs, [r["asr_after_retrain"] for r in adv], "s--", label="after retraining")
        ax.legend()
    ax.set(xlabel="adversarial round", ylabel="attack success rate", title="ASR by round", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(run_dir / "asr_by_round.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [(r.get("val") or {}).get("val_f1") for r in rounds], "k:o", label="validation (seeds)")
    for s in sets:
        ax.plot(xs, [((r.get("eval") or {}).get(s) or {}).get("f1") for r in rounds], "o-", label=s)
    ax.set(xlabel="round", ylabel="F1 at calibrated threshold", title="F1 by round", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "f1_by_round.png", dpi=110)
    plt.close(fig)
