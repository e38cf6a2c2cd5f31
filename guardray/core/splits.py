"""The classifier's training data as numbers: per-example targets, the validation split (grouped by root seed,
stratified, with a benign majority), class weights, summaries and the both-labels check.

Pure (numpy only, no torch, no Ray): the trainer (guardray.trainer), S2L selection (guardray.selection), Tune and
the benchmarks share these, so the split a run validates on is the same everywhere.
"""
from __future__ import annotations

from collections import Counter

from guardray.core.records import DataError, Example
from guardray.core.taxonomy import CATEGORY_CODES


def targets(ex: Example, codes: tuple[str, ...] = CATEGORY_CODES) -> list[float]:
    """1 + len(codes) targets in label-name order: unsafe, then one per policy category (default: built-in)."""
    return [1.0 if ex.unsafe else 0.0] + [1.0 if c in ex.categories else 0.0 for c in codes]


def example_rows(examples: list[Example], codes: tuple[str, ...] = CATEGORY_CODES) -> list[dict]:
    """What the Train workers need per example (kept small: it travels through the object store)."""
    return [{"text": e.model_text, "y": targets(e, codes), "cat": bool(e.unsafe and e.categories)}
            for e in examples]


def split_validation(examples: list[Example], fraction: float, seed: int = 0, safe_share: float = 0.0
                     ) -> tuple[list[Example], list[Example]]:
    """(train, val) with about `fraction` of the examples in val.

    Groups, not examples, are split: examples sharing a root seed (`seed_id or id`) or an identical normalised text
    stay together, so a paraphrase or operator child never validates its own seed and no child of a validation
    seed is trained on. Groups are stratified by whether they hold any unsafe example, so both labels reach the
    validation split whenever each has two or more groups. `safe_share` > 0 caps the unsafe part so that safe
    examples are at least that share of the split (the rest stays in training): deployment traffic is mostly
    benign, and a threshold calibrated on a 65%-unsafe split flags too much of it."""
    import numpy as np
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    parent = list(range(len(examples)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, e in enumerate(examples):
        for key in ("r:" + (e.seed_id or e.id), "t:" + " ".join(e.text.lower().split())):
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(examples)):
        groups.setdefault(find(i), []).append(i)
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    n_safe = n_unsafe = 0
    for unsafe in (False, True):  # safe-only groups first, so the unsafe part can be capped against them
        stratum = [g for g in groups.values() if any(examples[i].unsafe for i in g) == unsafe]
        if len(stratum) < 2:
            continue
        want = round(fraction * sum(len(g) for g in stratum))
        got = 0
        for k in rng.permutation(len(stratum)):
            if got >= want:
                break
            g = stratum[k]
            u = sum(examples[i].unsafe for i in g)
            if unsafe and safe_share > 0 and n_unsafe + u > (n_safe + len(g) - u) * (1 - safe_share) / safe_share:
                continue  # it would tip the split past the benign share: this group trains
            val_idx += g
            got += len(g)
            n_unsafe += u
            n_safe += len(g) - u
    vs = set(val_idx)
    return [e for i, e in enumerate(examples) if i not in vs], [examples[i] for i in sorted(vs)]


def pos_weight(train: list[Example], class_weight: str) -> float:
    """BCE pos_weight for the unsafe output: n_safe / n_unsafe when balanced, else 1."""
    if class_weight != "balanced":
        return 1.0
    n_pos = sum(e.unsafe for e in train)
    return (len(train) - n_pos) / n_pos if n_pos else 1.0


def category_pos_weights(train: list[Example], class_weight: str, cap: float = 20.0,
                         codes: tuple[str, ...] = CATEGORY_CODES) -> list[float]:
    """BCE pos_weight per category output, over the unsafe rows that carry categories: n_without / n_with (capped)
    when balanced. Each category is 1/15 of those rows, so without it the head learns "no category" everywhere and
    its micro-F1 at 0.5 stays 0. `codes`: the policy's categories, in head order."""
    rows = [e for e in train if e.unsafe and e.categories]
    if class_weight != "balanced" or not rows:
        return [1.0] * len(codes)
    n = Counter(c for e in rows for c in set(e.categories))
    return [min(cap, (len(rows) - n[c]) / n[c]) if n[c] else 1.0 for c in codes]


def data_summary(examples: list[Example]) -> dict:
    """Counts by label, source, stage, round and category (for the model card and guardray.json)."""
    return {
        "n": len(examples),
        "by_label": dict(Counter(e.label for e in examples)),
        "by_source": dict(Counter(e.source or "(none)" for e in examples).most_common()),
        "by_stage": dict(Counter(e.stage for e in examples).most_common()),
        "by_round": {str(k): v for k, v in sorted(Counter(e.round for e in examples).items())},
        "by_category": dict(Counter(c for e in examples for c in e.categories).most_common()),
    }


def check_data(train: list[Example], what: str = "training data") -> None:
    labels = Counter(e.label for e in train)
    if len(train) < 2 or len(labels) < 2:
        raise DataError(f"{what}: need examples of both labels (safe and unsafe), got {dict(labels) or 'none'}; "
                        "add data with --data or data.extra_train")
