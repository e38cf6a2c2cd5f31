"""`guardray data validate FILE [...]` and `guardray data stats FILE [...]`.

validate: every row checked (text, label, taxonomy codes, encoding, duplicate ids); prints each bad row as
FILE:LINE: reason and exits 1 when any is bad. stats: counts per label, category, style, source, stage, tags and
the length distribution (characters and words).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from guardray.core.records import DataError, Example, read_examples


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
