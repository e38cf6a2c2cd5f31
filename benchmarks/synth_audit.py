"""Audit of the synthetic data: does a kept example carry its label more often than a dropped one? Per round.

    make demo                                                     # writes runs/demo/synth/v0/<strategy>/ candidates
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_audit.py sample   # -> benchmarks/synth_audit_sample.jsonl
    # a person reads each sampled text and writes its true label into benchmarks/synth_audit_labels.jsonl
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_audit.py report   # -> benchmarks/synth_audit.md

`sample` re-runs the demo's curation on the demo's candidates, one round more each time (rules; + dedup; + meaning;
+ label; ...), so every candidate gets its fate: kept, or the first round (and reason) that dropped it - the same
decisions the pipeline made (curation is deterministic). It then draws 200 kept and 200 dropped candidates
(dropped ones spread over the rounds that drop) with a fixed seed. The sample file shows the reader only the text
and the label it was generated for, not its fate, so the reading is blind. `report` joins the reader's labels
("safe" / "unsafe" / "unclear") with the fates and writes label accuracy (the share whose intended label the reader
confirms) of kept vs dropped, per round that dropped them, per strategy.

`judges` puts label judges side by side on the audited children they judge (k-NN vote, a linear probe, and any
seeds-only classifier given with --judge): benchmarks/judge_audit.md.

`recheck` re-curates the demo's current candidates with the current code and config and, for the labelled ones
among them (same id and text), compares the fates the audit recorded with today's: how accurate what is kept now is,
and what the new drops were (benchmarks/synth_audit_recheck.md). It reads no evaluation data beyond the demo's
decontamination texts, and no labels are re-read: the team's labels decide.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "benchmarks" / "synth_audit_sample.jsonl"
LABELS = ROOT / "benchmarks" / "synth_audit_labels.jsonl"
FATES = ROOT / "benchmarks" / "out" / "synth_audit_fates.json"


def fates(cfg, demo: Path) -> tuple[dict[str, str], list]:
    """candidate id -> "kept" or "<round>:<reason>" of the round that dropped it."""
    from guardray.core.records import read_examples
    from guardray.curator import CuratorPool
    from guardray.data import SEEDS_PATH, load_seeds
    from guardray.ray_utils import init_ray
    from guardray.synth import read_texts
    cands = []
    for st in cfg.synth.strategies:
        f = demo / "synth" / "v0" / st / "data.parquet"
        if f.exists():
            cands += read_examples(f).examples
    if not cands:
        raise SystemExit(f"no candidates under {demo}/synth/v0: run `make demo` first")
    seeds = load_seeds([SEEDS_PATH])  # the prompt seeds
    init_ray()
    fate: dict[str, str] = {}
    rounds = [r for r in cfg.curator.rounds if r != "select"]
    for k in range(1, len(rounds) + 1):
        ccfg = dataclasses.replace(cfg.curator, rounds=tuple(rounds[:k]))
        with CuratorPool(ccfg, cfg.resources, reference_texts=[e.text for e in seeds], judge_model="",
                         decontam_texts=read_texts(list(cfg.data.eval_sets)), progress=False,
                         label_reference=seeds) as pool:
            kept = {e.id for e in pool.curate(cands, stage="audit").kept}
        for e in cands:
            if e.id not in kept and e.id not in fate:
                fate[e.id] = rounds[k - 1]
        print(f"[audit] after {rounds[:k]}: {len(kept)} kept", flush=True)
    for e in cands:
        fate.setdefault(e.id, "kept")
    return fate, cands


def sample(args) -> int:
    from guardray.core.config import load_config
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    fate, cands = fates(cfg, Path(args.demo))
    FATES.parent.mkdir(parents=True, exist_ok=True)
    FATES.write_text(json.dumps(fate, indent=0))
    rnd = random.Random(0)
    kept = [e for e in cands if fate[e.id] == "kept"]
    by_round = defaultdict(list)
    for e in cands:
        if fate[e.id] != "kept":
            by_round[fate[e.id]].append(e)
    pick = rnd.sample(kept, min(args.n, len(kept)))
    per = max(1, args.n // max(1, len(by_round)))
    dropped = []
    for r, exs in sorted(by_round.items()):
        dropped += rnd.sample(exs, min(per, len(exs)))
    rest = [e for exs in by_round.values() for e in exs if e not in dropped]
    dropped += rnd.sample(rest, min(args.n - len(dropped), len(rest))) if len(dropped) < args.n else []
    rows = [{"id": e.id, "strategy": e.stage, "intended_label": e.label, "intended_categories": list(e.categories),
             "text": e.text} for e in pick + dropped]
    rnd.shuffle(rows)  # blind: kept and dropped interleaved, no fate in the file
    SAMPLE.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"[audit] wrote {len(rows)} rows ({len(pick)} kept, {len(dropped)} dropped: "
          f"{dict(Counter(fate[e.id] for e in dropped))}) to {SAMPLE}")
    return 0


def report(args) -> int:
    fate = json.loads(FATES.read_text())
    rows = {json.loads(x)["id"]: json.loads(x) for x in SAMPLE.read_text().splitlines()}
    labels = {json.loads(x)["id"]: json.loads(x)["label"] for x in LABELS.read_text().splitlines()}
    groups: dict[str, list[str]] = defaultdict(list)
    for i, lab in labels.items():
        r = rows[i]
        verdict = "unclear" if lab == "unclear" else ("right" if lab == r["intended_label"] else "wrong")
        kind = "kept" if fate[i] == "kept" else "dropped"
        groups[kind].append(verdict)
        if kind == "dropped":
            groups[f"dropped by {fate[i]}"].append(verdict)
        groups[f"{kind} / {r['strategy']}"].append(verdict)

    def line(k, v):
        c = Counter(v)
        acc = c["right"] / max(1, c["right"] + c["wrong"])
        return f"| {k} | {len(v)} | {c['right']} | {c['wrong']} | {c['unclear']} | {acc:.2f} |"
    order = ["kept", "dropped"] + sorted(k for k in groups if k.startswith("dropped by")) + \
        sorted(k for k in groups if " / " in k)
    md = ["# Synthetic data audit: label accuracy of kept vs dropped candidates", "",
          "```", "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_audit.py sample   # then label, then:",
          "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_audit.py report", "```", "",
          "The demo's LLM candidates (SmolLM2-135M on CPU), re-curated round by round to give each its fate; a "
          "blind sample of kept and dropped ones read by the team (benchmarks/synth_audit_labels.jsonl: the "
          "reader saw the text and the label it was generated for, not its fate). Accuracy = confirmed / "
          "(confirmed + wrong); unclear = off-topic or unreadable text that a reader would not label either way.",
          "", "| group | n | label right | label wrong | unclear | accuracy |", "|---|---:|---:|---:|---:|---:|"]
    md += [line(k, groups[k]) for k in order if k in groups]
    (ROOT / "benchmarks" / "synth_audit.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def recheck(args) -> int:
    from guardray.core.config import load_config
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    before = json.loads(FATES.read_text())
    now, cands = fates(cfg, Path(args.demo))
    text = {e.id: e.text for e in cands}
    rows = {json.loads(x)["id"]: json.loads(x) for x in SAMPLE.read_text().splitlines()}
    labels = {json.loads(x)["id"]: json.loads(x)["label"] for x in LABELS.read_text().splitlines()}
    both = [i for i in labels if text.get(i) == rows[i]["text"] and i in before]

    def verdict(i):
        return "unclear" if labels[i] == "unclear" else ("right" if labels[i] == rows[i]["intended_label"] else
                                                         "wrong")

    def line(k, ids):
        c = Counter(verdict(i) for i in ids)
        acc = c["right"] / max(1, c["right"] + c["wrong"])
        return f"| {k} | {len(ids)} | {c['right']} | {c['wrong']} | {c['unclear']} | {acc:.2f} |"
    kept_before = [i for i in both if before[i] == "kept"]
    kept_now = [i for i in both if now[i] == "kept"]
    newly = defaultdict(list)
    for i in kept_before:
        if now[i] != "kept":
            newly[now[i]].append(i)
    md = ["# Synthetic data audit, rechecked with the current curation", "",
          "```", f"HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_audit.py recheck", "```", "",
          f"The labelled candidates of benchmarks/synth_audit_labels.jsonl that are still among the demo's "
          f"candidates ({len(both)} of {len(labels)}: same id and text), curated again with the current code and "
          f"configs/demo.yaml. Accuracy = confirmed / (confirmed + wrong), as in synth_audit.md.", "",
          "| group | n | label right | label wrong | unclear | accuracy |", "|---|---:|---:|---:|---:|---:|",
          line("kept by the audited curation", kept_before), line("kept now", kept_now)]
    md += [line(f"kept before, dropped now by {r}", ids) for r, ids in sorted(newly.items())]
    for st in sorted({rows[i]["strategy"] for i in both}):
        md.append(line(f"kept now / {st}", [i for i in kept_now if rows[i]["strategy"] == st]))
    md += ["", "Kept before, dropped now (text, intended label, reader's label):", ""]
    md += [f"- {now[i]}: [{rows[i]['intended_label']} -> {labels[i]}] {rows[i]['text'][:110]!r}"
           for ids in newly.values() for i in ids]
    (ROOT / "benchmarks" / "synth_audit_recheck.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


READING_JUDGES = """\
`judge` = the demo's seeds-only judge (`runs/demo/judge`: `curator.judge_model: seeds`, 2 epochs on 3,632 of the
4,178 prompt seeds, its own validation split of the other 546, val AUPRC 0.970; run of 2026-12-06). Reading: on
paraphrases meant unsafe - the label round's real work, since SmolLM2 keeps the topic and often drops the harm -
the k-NN vote keeps 77 of 86 children at 30% label accuracy; the demo's judge keeps 41 at 46%. No judge here
rescues query augmentation (5 of 122 right), which the demo leaves off. Embedding judges (k-NN, a linear probe)
rank a child by its topic: they cannot tell a faithful paraphrase from one that kept the words and lost the harm.
In the pipeline the judge only sees what the meaning band and the k-NN vote kept; the last table is that subset.
"""


READING_CONFIRM = """\
Reading (2026-12-06, the demo's judge): after the meaning band and the k-NN vote, 26 audited unsafe paraphrases
reach the judge, 16 of them right. At `judge_confirm` 0 it keeps 20 at 65% accuracy; 0.3 keeps 13 at 69%, losing
4 more right children to drop 3 more wrong ones. On 26 children that difference is noise, and it costs yield, so
the demo leaves `judge_confirm` at 0; the option stays for a generator whose rewrites crowd the threshold.
"""


def confirm_table(args, cfg, rows, labels, seeds, roots, seed_emb, x, p_unsafe, thresholds) -> list[str]:
    """`curator.judge_confirm` on the children the judge round would see: paraphrases meant unsafe that pass the
    configured meaning band and k-NN label vote (the rounds before the judge in configs/demo.yaml)."""
    import numpy as np
    from guardray.core import fidelity as F
    from guardray.core.curation import judge_verdict
    c = cfg.curator
    knn = p_unsafe["k-NN vote over the seeds (the label round)"]
    idx = []
    for i, (r, root) in enumerate(zip(rows, roots)):
        if r["strategy"] != "paraphrase" or r["intended_label"] != "unsafe" or root is None:
            continue
        why = F.meaning_reason(float(x[i] @ seed_emb[root]), None, lo=c.meaning_min, hi=c.meaning_max,
                               length_ratio=len(r["text"]) / max(1, len(seeds[root].text)),
                               ratio_lo=c.length_ratio_min, ratio_hi=c.length_ratio_max)
        if why is None and F.label_verdict("unsafe", float(knn[i]), margin=c.label_margin) != "disagree":
            idx.append(i)
    right = np.array([labels[rows[i]["id"]] == "unsafe" for i in idx])
    md = ["", "## `judge_confirm`: unsafe paraphrases that reach the judge round", "",
          f"The {len(idx)} audited paraphrases meant unsafe that pass configs/demo.yaml's meaning band and k-NN label "
          f"vote ({int(right.sum())} of them read unsafe by the team). The judge keeps one when it scores it at least "
          "`judge_confirm` above its threshold (`judge_margin` "
          f"{args.margin}; 0 = on its side, the earlier rule). Chosen on these team labels only.", "",
          "| judge | judge_confirm | kept | right kept | wrong kept | accuracy kept | right lost |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for name, thr in thresholds.items():
        p = p_unsafe[name]
        for conf in args.confirm:
            kept = np.array([judge_verdict("unsafe", float(p[i]), threshold=thr, margin=args.margin,
                                           confirm=conf) == "agree" for i in idx], dtype=bool)
            md.append(f"| {name.split(' (')[0]} | {conf:.2f} | {kept.sum()} | {(right & kept).sum()} | "
                      f"{(~right & kept).sum()} | {(right & kept).sum() / max(1, kept.sum()):.2f} | "
                      f"{(right & ~kept).sum()} |")
    return md + ["", READING_CONFIRM]


def judges(args) -> int:
    """Label judges side by side on the audited children they would judge (paraphrase and augment: contrastive
    children are exempt from the label round): does a child the judge agrees with carry its label?"""
    import re
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from guardray.classifier import GuardClassifier
    from guardray.core import fidelity as F
    from guardray.core.config import load_config
    from guardray.core.curation import judge_disagrees
    from guardray.data import SEEDS_PATH, load_seeds
    from guardray.embed import Embedder
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    labels = {json.loads(x)["id"]: json.loads(x)["label"] for x in LABELS.read_text().splitlines()}
    rows = [r for r in rows if r["id"] in labels and r["strategy"] in ("paraphrase", "augment")]
    seeds = load_seeds([SEEDS_PATH])
    index = {e.id: i for i, e in enumerate(seeds)}
    emb = Embedder(cfg.curator.embed_model)
    seed_emb, x = emb.encode([e.text for e in seeds]), emb.encode([r["text"] for r in rows])
    y = np.array([e.unsafe for e in seeds], dtype=float)
    roots = [index.get(re.sub(r"^r\d+-(paraphrase|contrastive)-", "", r["id"]).rsplit("-", 1)[0])
             if r["strategy"] == "paraphrase" else None for r in rows]
    p_unsafe = {"k-NN vote over the seeds (the label round)": F.knn_unsafe_vote(
        x, seed_emb, y, k=cfg.curator.label_k, exclude=roots)}
    fold = np.random.default_rng(0).integers(0, 5, len(seeds))  # the probe never saw a child's own root seed
    probes = [LogisticRegression(max_iter=2000, class_weight="balanced").fit(seed_emb[fold != f], y[fold != f])
              for f in range(5)]
    p_unsafe["linear probe on the seeds' embeddings"] = np.array(
        [probes[fold[r] if r is not None else 0].predict_proba(x[i:i + 1])[0, 1] for i, r in enumerate(roots)])
    keep_rules = {"k-NN vote over the seeds (the label round)":
                  lambda lab, p: F.label_verdict(lab, p, margin=cfg.curator.label_margin) != "disagree",
                  "linear probe on the seeds' embeddings": lambda lab, p: (p >= 0.5) == (lab == "unsafe")}
    thresholds = {}
    for ck in args.judge:
        clf = GuardClassifier.load(ck)
        name = f"seeds-only classifier {Path(ck).name} (threshold {clf.threshold:.2f}, margin {args.margin})"
        thresholds[name] = clf.threshold
        p_unsafe[name] = clf.score([r["text"] for r in rows]).unsafe
        keep_rules[name] = (lambda t: lambda lab, p: not judge_disagrees(lab, p, threshold=t, margin=args.margin))(
            clf.threshold)
    md = ["# Label judges on the audited synthetic children", "", "```",
          "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_audit.py judges "
          + " ".join(f"--judge {ck}" for ck in args.judge), "```", "",
          "The team's blind audit labels (benchmarks/synth_audit_labels.jsonl) of the paraphrase and augment children "
          "(contrastive ones are exempt from label judging). A judge keeps a child it agrees with; right = the "
          "reader confirmed the intended label, wrong = the reader gave the other label or could not label it "
          "(unclear: noise either way). AUC = how well the judge's agreement score ranks right above wrong. The "
          "k-NN vote leaves each paraphrase's root seed out; the probe is cross-fitted so that it never trained on "
          "a child's root seed; a seeds-only classifier (the pipeline's `curator.judge_model: seeds`) trained on "
          "the prompt seeds, most roots included, as the pipeline's does.", "",
          "| judge | intended label | strategy | n | right | kept | right kept | wrong kept | accuracy kept | AUC |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in p_unsafe.items():
        for want in ("unsafe", "safe"):
            for st in ("paraphrase", "augment", "both"):
                idx = [i for i, r in enumerate(rows) if r["intended_label"] == want and st in (r["strategy"], "both")]
                if not idx:
                    continue
                right = np.array([labels[rows[i]["id"]] == want for i in idx])
                kept = np.array([keep_rules[name](want, float(p[i])) for i in idx])
                agree = np.array([p[i] if want == "unsafe" else 1 - p[i] for i in idx])
                auc = roc_auc_score(right, agree) if 0 < right.sum() < len(right) else float("nan")
                md.append(f"| {name} | {want} | {st} | {len(idx)} | {right.sum()} | {kept.sum()} | "
                          f"{(right & kept).sum()} | {(~right & kept).sum()} | "
                          f"{(right & kept).sum() / max(1, kept.sum()):.2f} | {auc:.3f} |")
    md += ["", READING_JUDGES]
    md += confirm_table(args, cfg, rows, labels, seeds, roots, seed_emb, x, p_unsafe, thresholds)
    (ROOT / "benchmarks" / "judge_audit.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["sample", "report", "recheck", "judges"])
    ap.add_argument("--judge", action="append", default=[], help="judges: a seeds-only classifier checkpoint "
                                                                     "(repeatable), e.g. runs/demo/judge")
    ap.add_argument("--margin", type=float, default=0.0, help="judges: the classifier judge's curator.judge_margin")
    ap.add_argument("--confirm", type=lambda v: [float(x) for x in v.split(",")], default=[0.0, 0.1, 0.2, 0.3],
                    help="judges: curator.judge_confirm values to compare (comma-separated)")
    ap.add_argument("--demo", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--n", type=int, default=200, help="kept and dropped candidates to sample (each)")
    args = ap.parse_args(argv)
    return {"sample": sample, "report": report, "recheck": recheck, "judges": judges}[args.step](args)


if __name__ == "__main__":
    raise SystemExit(main())
