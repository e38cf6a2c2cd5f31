"""`guardray data validate FILE [...]` and `guardray data stats FILE [...]`.

validate: every row checked (text, label, taxonomy codes, encoding, duplicate ids); prints each bad row as
FILE:LINE: reason and exits 1 when any is bad. stats: counts per label, category, style, source, stage, tags, the
length distribution (characters and words) and `form_auc`: how well the label is predicted from surface form alone
(length, question or imperative opening, punctuation, casing, line breaks; 5-fold logistic regression ROC-AUC). 0.5
means form carries no label signal; the v1+v2 seeds scored 0.719 (questions mostly safe, statements and requests
mostly unsafe) and a classifier trained on them learnt that shortcut (SEEDS.md, v3).
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter

import numpy as np

from guardray.core.records import DataError, Example, read_examples


_QUESTION = re.compile(r"(?i)^(how|what|what's|whats|where|why|who|which|when|can|could|is|are|do|does|should|would|"
                       r"will)\b")
_IMPERATIVE = re.compile(r"(?i)^(write|help|give|tell|make|generate|create|explain|draft|list|show|find|describe|"
                         r"summarize|translate|ignore|pretend|act)\b")
_FIRST_PERSON = re.compile(r"\bI\b|\bI'm\b|\bmy\b")


def form_features(text: str) -> list[float]:
    """Surface form only, nothing about meaning: what a classifier can shortcut on when it tracks the label."""
    s = text.strip()
    w = len(s.split())
    return [np.log1p(len(s)), w <= 8, 8 < w <= 20, 20 < w <= 60, w > 60, bool(_QUESTION.match(s)), s.endswith("?"),
            bool(_IMPERATIVE.match(s)), "\n" in s, s == s.lower(), sum(c.isupper() for c in s) / max(1, len(s)),
            "!" in s, bool(_FIRST_PERSON.search(s))]


def form_auc(examples: list[Example], folds: int = 5, seed: int = 0) -> float | None:
    """Cross-validated ROC-AUC of a logistic regression predicting the label from `form_features` alone (None when
    a label has fewer than `folds` rows)."""
    y = np.array([e.unsafe for e in examples])
    if min(y.sum(), (~y).sum()) < folds:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    x = np.array([form_features(e.text) for e in examples], dtype=float)
    p = cross_val_predict(LogisticRegression(max_iter=1000), x, y, method="predict_proba",
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))[:, 1]
    return round(float(roc_auc_score(y, p)), 3)


def stats(examples: list[Example]) -> dict:
    lens = np.array([len(e.text) for e in examples]) if examples else np.zeros(1)
    words = np.array([len(e.text.split()) for e in examples]) if examples else np.zeros(1)
    unsafe = [e for e in examples if e.unsafe]
    return {
        "n": len(examples),
        "label": dict(Counter(e.label for e in examples)),
        "unsafe_by_category": dict(sorted(Counter(c for e in unsafe for c in e.categories[:1]).items(),
                                          key=lambda kv: (len(kv[0]), kv[0]))),
        "style": dict(Counter(e.style or "(none)" for e in examples).most_common()),
        "style_by_label": {lab: dict(Counter(e.style or "(none)" for e in examples if e.label == lab)
                                     .most_common()) for lab in ("unsafe", "safe")},
        "source": dict(Counter(e.source for e in examples).most_common()),
        "stage": dict(Counter(e.stage for e in examples).most_common()),
        "hard_benign": sum("hard_benign" in e.tags for e in examples if not e.unsafe),
        "languages": dict(Counter(t for e in examples for t in e.tags if t.startswith("lang:")).most_common()),
        "chars": {q: int(np.percentile(lens, p)) for q, p in
                  (("min", 0), ("p50", 50), ("p90", 90), ("max", 100))},
        "words": {q: int(np.percentile(words, p)) for q, p in
                  (("min", 0), ("p50", 50), ("p90", 90), ("max", 100))},
        "form_auc": form_auc(examples),
    }


def render(s: dict) -> str:
    out = [f"examples: {s['n']}   labels: {s['label']}   hard benign (safe): {s['hard_benign']}"]
    out.append("unsafe by category: " + ", ".join(f"{k}={v}" for k, v in s["unsafe_by_category"].items()))
    out.append("style: " + ", ".join(f"{k}={v}" for k, v in s["style"].items()))
    out.append("source: " + ", ".join(f"{k}={v}" for k, v in s["source"].items()))
    out.append("stage: " + ", ".join(f"{k}={v}" for k, v in s["stage"].items()))
    if s["languages"]:
        out.append("non-English: " + ", ".join(f"{k}={v}" for k, v in s["languages"].items()))
    out.append("length chars " + " ".join(f"{k}={v}" for k, v in s["chars"].items())
               + " | words " + " ".join(f"{k}={v}" for k, v in s["words"].items()))
    if s["form_auc"] is not None:
        warn = "  <- the label follows surface form: add each form (questions, requests, statements, long posts) " \
               "on both labels" if s["form_auc"] > 0.7 else ""
        out.append(f"label from surface form alone (5-fold ROC-AUC, 0.5 = none): {s['form_auc']:.3f}{warn}")
    return "\n".join(out)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="guardray data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    v = sub.add_parser("validate", help="check every row; list bad rows with file:line: reason")
    v.add_argument("files", nargs="+")
    v.add_argument("--eval", action="store_true", help="evaluation schema: categories are free upstream names")
    v.add_argument("--policy", default="llama-guard-3",
                   help="the policy whose category codes rows must use: a built-in name or a policy YAML")
    st = sub.add_parser("stats", help="counts per label, category, style, source; length distribution")
    st.add_argument("files", nargs="+")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.add_argument("--skip-bad", action="store_true", help="skip invalid rows (they are listed) instead of failing")
    st.add_argument("--policy", default="llama-guard-3", help="the policy the rows' category codes come from")
    args = p.parse_args(argv)
    from guardray.core.taxonomy import PolicyError, load_policy
    try:
        codes = load_policy(args.policy).codes
    except PolicyError as e:
        print(e)
        return 2
    if args.action == "validate":
        bad = 0
        for f in args.files:
            try:
                r = read_examples(f, skip_bad=True, strict_categories=not args.eval, codes=codes)
            except DataError as e:
                print(e)
                bad += 1
                continue
            for err in r.skipped:
                print(err)
            bad += len(r.skipped)
            print(f"{f}: {len(r.examples)} valid, {len(r.skipped)} invalid")
        return 1 if bad else 0
    examples = []
    for f in args.files:
        r = read_examples(f, skip_bad=args.skip_bad, codes=codes)
        for err in r.skipped:
            print(f"skipped {err}")
        examples += r.examples
    s = stats(examples)
    print(json.dumps(s, indent=2) if args.json else render(s))
    return 0
