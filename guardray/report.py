"""The pipeline report: runs/NAME/report.json, report.md and plots of ASR and F1 by round."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _asr(d: dict | None, fallback=None) -> str:
    """"0.094 [0.06, 0.14] n=160" from an asr_detail dict (the rate alone for older reports)."""
    if not d:
        return _fmt(fallback)
    ci = d.get("ci95")
    return _fmt(d.get("asr")) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + f" n={d.get('n')}"


def write_pipeline_report(report: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rounds = report["rounds"]
    sets = sorted({k for r in rounds for k in (r.get("eval") or {})})
    md = [f"# guardray run `{report['run']}`", "",
          f"Final checkpoint: `{report['final_checkpoint']}` (threshold {_fmt(report['threshold'])}); "
          f"{report['seconds'] / 60:.1f} min.", "",
          "ASR = share of fresh attacks on held-out seeds that fool the classifier while keeping the seed's "
          "meaning and label, counted only where the classifier got the seed itself right (our definition; see "
          "guardray/core/adversarial.py), with its 95% Wilson interval. *Before* = against the classifier the "
          "round attacked; *after* = against the classifier retrained on the round's harvest (these attacks are "
          "never harvested).", ""]
    ch = report.get("choices") or {}
    if ch.get("validity"):
        judge = ch["validity"] + (f" ({ch['validity_model']})" if ch.get("validity_model") else "")
        md += [f"Validity judge: {judge}; curation judge: {ch.get('curation_judge') or 'none'}; generator: "
               f"{ch.get('generator', '-')}.", ""]
    seeds = ch.get("attack_seeds") or {}
    if seeds.get("max_chars"):
        md += [f"Attacked seeds: {seeds['n']} single-prompt seeds of up to {seeds['max_chars']} characters "
               f"(`attack.max_seed_chars`); {seeds['too_long']} longer ones left out, since a rewrite is at most "
               f"{seeds.get('max_new_tokens', '?')} tokens (`ppo.max_new_tokens`) and could not keep their meaning.",
               ""]
    md += ["## By round", "",
          "| round | train examples | harvested | curated | ASR before | ASR after | val F1 |"
          + "".join(f" F1 {s} |" for s in sets),
          "|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(sets)]
    for r in rounds:
        ev = r.get("eval") or {}
        md.append(f"| {r['round']} | {r.get('n_train', '-')} | {r.get('harvested', '-')} | {r.get('curated', '-')} "
                  f"| {_asr(r.get('asr_before'), r.get('asr_before_retrain'))} "
                  f"| {_asr(r.get('asr_after'), r.get('asr_after_retrain'))} "
                  f"| {_fmt((r.get('val') or {}).get('val_f1'))} |"
                  + "".join(f" {_fmt((ev.get(s) or {}).get('f1'))} |" for s in sets))
    fits = [f"round {r['round']}: {rt['n_fit']} examples ({(rt.get('replay') or {}).get('adversarial', 0)} "
            f"adversarial + {(rt.get('replay') or {}).get('replayed', '?')} replayed), lr {rt['lr']:g}, "
            f"{rt['epochs']} epoch(s)" for r in rounds if (rt := r.get("retrain")) and rt.get("n_fit")]
    if fits:
        md += ["", "Warm-started retrains fit on: " + "; ".join(fits) + " (the control arm replays the same "
               "examples without the adversarial ones)."]
    kept = [str(r["round"]) for r in rounds if r.get("retrained") is False]
    if kept:
        md += ["", f"Round(s) {', '.join(kept)} harvested no adversarial example, so the classifier was not "
               "retrained: its row repeats the previous round's classifier (ASR after = before)."]
    if report.get("stage_seconds"):
        md += ["", "## Stage times (this run's wall time; a stage resumed from an earlier run shows ~0)", "",
               "| stage | minutes |", "|---|---:|"]
        md += [f"| {k} | {v / 60:.1f} |" for k, v in report["stage_seconds"].items()]
    if sets:
        md += ["", "## Evaluation sets (final round, at the calibrated threshold)", "",
               "| set | n | F1 | precision | recall | FPR | AUPRC | recall@1%FPR |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        last = rounds[-1].get("eval") or {}
        for s in sets:
            d = last.get(s) or {}
            md.append(f"| {s} | {d.get('n', '-')} | " + " | ".join(_fmt(d.get(k)) for k in
                      ("f1", "precision", "recall", "fpr", "auprc", "recall_at_1pct_fpr")) + " |")
    final = report.get("final_checkpoint")
    if final:
        val_fpr = (rounds[-1].get("val") or {}).get("val_fpr") if rounds else None
        seen = [f"{s} {_fmt(((rounds[-1].get('eval') or {}).get(s) or {}).get('fpr'))}" for s in sets]
        md += ["", "## Before deploying: set the threshold on your traffic", "",
               f"The threshold ({_fmt(report['threshold'])}) was calibrated on this run's validation split (FPR "
               f"{_fmt(val_fpr)} there), which is drawn from the same team-written data as the training set: on "
               "other traffic its FPR differs" + (f" (above: {', '.join(seen)})" if seen else "")
               + ". Set it on a sample of yours: "
               f"`guardray calibrate --model {final} --data SAMPLE --policy target_fpr --target-fpr 0.05 --out "
               f"{final}-calibrated` (labelled rows), or `--policy flag_rate --flag-rate 0.02` (unlabelled logs); "
               "README, \"Calibrate on your own traffic\"."]
    ctl = [r for r in rounds if r.get("control")]
    if ctl:
        md += ["", "## Treatment vs no-attack control (same warm starts and epochs; the control never sees a "
               "harvested example)", "", "| round | ASR after: treatment | ASR after: control | val F1 treatment / "
               "control |" + "".join(f" F1 {s} treatment / control |" for s in sets),
               "|---:|---|---|---|" + "---|" * len(sets)]
        for r in ctl:
            c, ev, cev = r["control"], r.get("eval") or {}, r["control"].get("eval") or {}
            md.append(f"| {r['round']} | {_asr(r.get('asr_after'), r.get('asr_after_retrain'))} | "
                      f"{_asr(c.get('asr_after'))} | {_fmt((r.get('val') or {}).get('val_f1'))} / "
                      f"{_fmt((c.get('val') or {}).get('val_f1'))} |"
                      + "".join(f" {_fmt((ev.get(s) or {}).get('f1'))} / {_fmt((cev.get(s) or {}).get('f1'))} |"
                                for s in sets))
    stat = [r for r in rounds if r.get("static")]
    if stat:
        md += ["", "## RL attacker vs the static suite (the same held-out seeds)", "",
               "The static suite applies fixed label-preserving operators (typos, leetspeak, framings, padding, "
               "transcripts, ...; guardray.core.operators) to the seeds the RL attacker rewrites. *Static ASR* counts "
               "a success by the RL attacker's full test (meaning band, validity judge); *flipped* counts every child "
               "the classifier gets wrong where it got the seed right: an operator keeps meaning and label by "
               "construction, so every flip is a real error. Where flipped is far above static ASR, the success "
               "test's gates (a MiniLM embedding, a MiniLM judge) share the attacked classifier's blind spots, and "
               "an RL attacker rewarded through them cannot learn those attacks. *After* = against the retrained "
               "classifier (treatment) and the no-attack control.", "",
               "| round | RL ASR before | static ASR before | flipped before | flipped after: treatment | "
               "flipped after: control |", "|---:|---|---|---|---|---|"]
        for r in stat:
            st, c = r["static"], (r.get("control") or {}).get("static_flipped_after")
            md.append(f"| {r['round']} | {_asr(r.get('asr_before'), r.get('asr_before_retrain'))} | "
                      f"{_asr(st['before'])} | {_asr(st.get('flipped_before'))} | {_asr(st.get('flipped_after'))} "
                      f"| {_asr(c) if c else '-'} |")
        ops = sorted({op for r in stat for op in r["static"]["by_operator"]})
        md += ["", "Static suite by operator, before retraining: static ASR / flipped (n).", "",
               "| operator |" + "".join(f" round {r['round']} |" for r in stat), "|---|" + "---:|" * len(stat)]
        for op in ops:
            cells = [r["static"]["by_operator"].get(op) for r in stat]
            md.append(f"| {op} |" + "".join(f" {_fmt(c['asr'])} / {_fmt(c.get('flipped'))} ({c['n']}) |" if c
                                            else " - |" for c in cells))
    comp_rounds = [r for r in rounds if r.get("reward_components")]
    detail = [r for r in comp_rounds if r.get("asr_before")]
    if detail:
        md += ["", "## ASR by seed label and category (before retraining; seed_correct = share of seeds the "
               "classifier got right)", "", "| round | group | n | ASR [95% CI] | seed_correct |",
               "|---:|---|---:|---|---:|"]
        for r in detail:
            d = r["asr_before"]
            cats = [(k, v) for k, v in d["by_category"].items() if k not in d["by_label"]]  # "safe" is in both
            for grp, cell in [*d["by_label"].items(), *cats]:
                md.append(f"| {r['round']} | {grp} | {cell['n']} | {_asr(cell)} | {_fmt(cell['seed_correct'])} |")
    styled = [r for r in comp_rounds if r.get("by_style")]
    if styled:
        md += ["", "## Attack styles (fresh attacks, before retraining): success and diversity", "",
               "| round | style | n | ASR | distinct bigrams | embedding spread |", "|---:|---|---:|---:|---:|---:|"]
        for r in styled:
            for st, d in r["by_style"].items():
                md.append(f"| {r['round']} | {st} | {d['n']} | {_fmt(d['asr'])} | {_fmt(d['distinct_2'])} | "
                          f"{_fmt(d['spread'])} |")
        md += ["", "`diversity_by_update.png`: distinct bigrams and mean novelty of each PPO batch; a policy "
               "collapsing onto one trick shows as both falling."]
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
        for key, fallback, fmt, lab in (("asr_before", "asr_before_retrain", "o-", "before retraining"),
                                        ("asr_after", "asr_after_retrain", "s--", "after retraining")):
            ys = [r[fallback] for r in adv]
            cis = [(r.get(key) or {}).get("ci95") for r in adv]
            err = None
            if all(cis):  # 95% Wilson intervals as error bars
                err = [[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]]
            ax.errorbar(xs, ys, yerr=err, fmt=fmt, capsize=3, label=lab)
        ctl = [(r["round"], r["control"]["asr_after"]) for r in adv if (r.get("control") or {}).get("asr_after")]
        if ctl:
            ax.plot([x for x, _ in ctl], [d["asr"] for _, d in ctl], "x:", color="grey", label="control (no attacks)")
        st = [(r["round"], (r["static"].get("flipped_before") or r["static"]["before"])["asr"]) for r in adv
              if r.get("static")]
        if st:
            ax.plot([x for x, _ in st], [y for _, y in st], "d-.", color="tab:green",
                    label="static suite: flipped (before)")
        ax.legend()
    ax.set(xlabel="adversarial round", ylabel="attack success rate", title="ASR by round", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(run_dir / "asr_by_round.png", dpi=110)
    plt.close(fig)
    ups = [(r["round"], u) for r in rounds for u in r.get("ppo") or [] if u.get("distinct_2") is not None]
    if ups:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = list(range(1, len(ups) + 1))
        ax.plot(xs, [u["distinct_2"] for _, u in ups], "o-", label="distinct bigrams")
        ax.plot(xs, [u.get("novelty") for _, u in ups], "s--", label="mean novelty")
        ax.plot(xs, [u.get("success") for _, u in ups], "x:", label="success rate")
        ax.set(xlabel="PPO update (all rounds)", ylim=(0, 1), title="Attack diversity by update")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "diversity_by_update.png", dpi=110)
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
