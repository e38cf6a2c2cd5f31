"""Fidelity rounds of curation, as pure maths on sentence embeddings (no model, no Ray; unit-tested alone).

A small generator writes many children that do not carry the label they were asked for ("Your challenge." as an
unsafe S4 request). Two rounds check every child against the *seeds*, which never saw it:

- **meaning**: a child keeps its parent's meaning when the embedding cosine to its parent seed lies inside a band
  (`lo` <= cos <= `hi`): below is off-intent, above is a near-copy that teaches nothing. Its length must also stay
  within a band of its parent's (characters, `ratio_lo` <= child/parent <= `ratio_hi`): a rewrite a quarter as
  long is a fragment ("Dear State Elections Board," from a request for a fake election email), one four times as
  long a ramble; in the demo's kept paraphrases these were all noise. A child without a parent
  seed (query augmentation) is compared with the seeds of its intended label and category: the mean cosine of its
  5 nearest such seeds must reach `lo_topic`. Contrastive children (safe rewrites of an unsafe seed) are meant to change
  the meaning, so only the near-copy bound applies to them.
- **label**: a similarity-weighted k-nearest-neighbour vote over the labelled seeds (the child's own root seed left
  out, so a paraphrase is not judged by the sentence it copies) gives p(unsafe). Agreement is kept; a vote at least
  `margin` past 0.5 on the other side is a disagreement (dropped or relabelled by policy); in between, kept.
  Contrastive children are exempt (the curator's choice): they reuse an unsafe seed's words on purpose, so the
  vote calls them unsafe whatever they say.

`best_of` keeps the `n` children of one parent with the highest agreement: generate many, keep few.
"""
from __future__ import annotations

import numpy as np


def meaning_reason(cos_parent: float | None, cos_nearest: float | None, *, lo: float, hi: float,
                   contrastive: bool = False, lo_topic: float | None = None, length_ratio: float | None = None,
                   ratio_lo: float = 0.0, ratio_hi: float = float("inf"),
                   contrastive_hi: float | None = None) -> str | None:
    """Why a child fails the meaning band, or None. `cos_parent`: cosine to the parent seed (None when the child
    has none); `cos_nearest`: mean cosine to its nearest seeds of the intended label/category, which must reach
    `lo_topic` (default `lo`; new requests on a topic sit further from any one seed than a paraphrase does);
    `length_ratio`: the child's length over its parent's, inside [`ratio_lo`, `ratio_hi`]. A contrastive child (the
    benign twin of an unsafe seed) above `contrastive_hi` still means what its parent means ("parent_intent"): the
    generator kept the harm and the child's "safe" label is wrong."""
    if cos_parent is not None:
        if length_ratio is not None and length_ratio < ratio_lo:
            return "fragment"
        if length_ratio is not None and length_ratio > ratio_hi:
            return "ramble"
        if cos_parent > hi:
            return "near_copy"
        if contrastive and contrastive_hi is not None and cos_parent > contrastive_hi:
            return "parent_intent"
        if not contrastive and cos_parent < lo:
            return "off_intent"
        return None
    if cos_nearest is not None and cos_nearest < (lo if lo_topic is None else lo_topic):
        return "off_topic"
    return None


def knn_unsafe_vote(emb: np.ndarray, ref_emb: np.ndarray, ref_unsafe: np.ndarray, *, k: int = 10,
                    exclude: list[int | None] | None = None) -> np.ndarray:
    """p(unsafe) per row of `emb` [n, d] from its `k` most similar reference rows (L2-normalised embeddings),
    weighted by cosine (clipped at 0). `exclude[i]`: a reference row that may not vote for row i (its root seed)."""
    n = len(emb)
    if n == 0 or len(ref_emb) == 0:
        return np.full(n, 0.5)
    sims = emb @ ref_emb.T
    if exclude is not None:
        for i, j in enumerate(exclude):
            if j is not None:
                sims[i, j] = -np.inf
    k = max(1, min(k, len(ref_emb) - (1 if exclude is not None else 0)))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(sims, top, axis=1), 0.0, None)
    votes = ref_unsafe[top].astype(float)
    tot = w.sum(1)
    return np.where(tot > 0, (w * votes).sum(1) / np.where(tot > 0, tot, 1.0), votes.mean(1))


def nearest_mean(emb: np.ndarray, ref_emb: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean cosine of each row to its `k` most similar reference rows (0 where there is no reference)."""
    if len(emb) == 0 or len(ref_emb) == 0:
        return np.zeros(len(emb))
    sims = emb @ ref_emb.T
    k = max(1, min(k, len(ref_emb)))
    return np.sort(np.partition(sims, -k, axis=1)[:, -k:], axis=1).mean(1)


def label_verdict(label: str, p_unsafe: float, *, margin: float) -> str:
    """"agree", "unsure" or "disagree" for an example labelled `label` given the vote p(unsafe)."""
    p_label = p_unsafe if label == "unsafe" else 1.0 - p_unsafe
    if p_label >= 0.5:
        return "agree"
    return "disagree" if p_label <= 0.5 - margin else "unsure"


def best_of(groups: dict[str, list[int]], score: np.ndarray, n: int) -> set[int]:
    """Indices to keep: the `n` highest-`score` members of each group (all when n <= 0). Ties: the earlier row."""
    if n <= 0:
        return {i for g in groups.values() for i in g}
    keep: set[int] = set()
    for members in groups.values():
        keep |= set(sorted(members, key=lambda i: (-score[i], i))[:n])
    return keep
