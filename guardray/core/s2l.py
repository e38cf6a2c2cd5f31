"""S2L data selection, pure part: cluster per-example loss trajectories, then sample evenly across the clusters.

Our reading of S2L ("SmallToLarge", arXiv:2403.07384): examples whose training losses move alike on a small proxy
model are redundant for a larger one, so the training subset should cover every kind of trajectory rather than the
most common ones. Steps: (1) train a small proxy classifier and record each example's loss at several points
(guardray.selection.loss_trajectories, the part that trains); (2) k-means the trajectories here; (3) fill the budget
cluster by cluster, smallest first, giving each cluster an equal share of what is left (a cluster smaller than its
share gives everything and its unused share passes on), randomly within a cluster.

    idx, labels = s2l_select(trajectories, budget=300, n_clusters=8, seed=0)

Pure: numpy and scikit-learn only.
"""
from __future__ import annotations

import numpy as np


def cluster_trajectories(traj: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means over the rows of `traj` [n_examples, n_points] -> cluster label per example (0..k-1).

    k is capped at the number of distinct trajectories, so every returned cluster is non-empty."""
    from sklearn.cluster import KMeans
    x = np.asarray(traj, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"trajectories must be a non-empty 2-D array [examples, points], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("trajectories contain NaN or infinity (did the proxy training diverge?)")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    k = min(n_clusters, len(np.unique(x, axis=0)))
    if k == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    # relabel densely so labels are 0..k'-1 even if k-means left a cluster empty
    _, labels = np.unique(km.labels_, return_inverse=True)
    return labels.astype(np.int64)


def sample_evenly(labels: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Pick `budget` indices spread evenly over the clusters in `labels` (sorted ascending).

    Every cluster gets at least one pick when budget >= the number of clusters; a budget >= len(labels) keeps all."""
    labels = np.asarray(labels)
    n = labels.size
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if budget >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    clusters = [np.nonzero(labels == c)[0] for c in np.unique(labels)]
    clusters.sort(key=len)  # smallest first: their unused share flows to the bigger ones
    if budget < len(clusters):  # cannot cover every cluster: one each from randomly chosen clusters
        chosen = rng.choice(len(clusters), size=budget, replace=False)
        return np.sort(np.array([rng.choice(clusters[i]) for i in chosen], dtype=np.int64))
    picked, left = [], budget
    for i, members in enumerate(clusters):
        share = left // (len(clusters) - i)
        take = min(len(members), share)
        picked.append(rng.choice(members, size=take, replace=False))
        left -= take
    out = np.concatenate(picked).astype(np.int64)
    if left > 0:  # rounding safety net: top up from the examples not yet picked
        rest = np.setdiff1d(np.arange(n), out)
        out = np.r_[out, rng.choice(rest, size=left, replace=False)]
    return np.sort(out)


def s2l_select(traj: np.ndarray, budget: int, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the trajectories and sample `budget` of them evenly -> (selected indices, cluster labels)."""
    labels = cluster_trajectories(traj, n_clusters, seed)
    return sample_evenly(labels, budget, seed), labels
