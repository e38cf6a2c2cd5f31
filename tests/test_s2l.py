"""S2L data selection: trajectory clustering and even sampling (pure), and the proxy classifier that records loss
trajectories (tiny encoder, in-process). Run: pytest tests/test_s2l.py"""
import dataclasses
import random

import numpy as np
import pytest

from guardray.core.s2l import cluster_trajectories, s2l_select, sample_evenly


def _blobs(sizes, seed=0):
    rng = np.random.default_rng(seed)
    centres = [np.full(6, 3.0 * i) for i in range(len(sizes))]
    x = np.concatenate([c + 0.1 * rng.standard_normal((n, 6)) for c, n in zip(centres, sizes)])
    truth = np.concatenate([[i] * n for i, n in enumerate(sizes)])
    return x, truth


def test_kmeans_recovers_trajectory_groups():
    x, truth = _blobs([50, 10, 3])
    labels = cluster_trajectories(x, 3, seed=0)
    # same partition up to renaming
    assert len({(a, b) for a, b in zip(truth, labels)}) == 3
    assert cluster_trajectories(x, 10, seed=0).max() <= 9
    assert (cluster_trajectories(np.ones((5, 3)), 4) == 0).all()  # identical trajectories: one cluster
    with pytest.raises(ValueError, match="NaN"):
        cluster_trajectories(np.full((3, 2), np.nan), 2)


@pytest.mark.parametrize("budget", [3, 7, 20, 40, 62])
def test_sample_evenly_exact_size_covers_every_cluster_and_is_balanced(budget):
    labels = np.array([0] * 50 + [1] * 10 + [2] * 3)
    idx = sample_evenly(labels, budget, seed=1)
    assert len(idx) == budget and len(set(idx.tolist())) == budget
    counts = np.bincount(labels[idx], minlength=3)
    assert (counts >= 1).all()  # every cluster covered
    # small clusters give what they have; the rest is split as evenly as possible
    share = budget // 3
    assert counts[2] == min(3, share) and counts[1] >= min(10, share)
    assert sample_evenly(labels, 100).tolist() == list(range(63))


def test_sample_evenly_with_budget_below_cluster_count_picks_distinct_clusters():
    labels = np.repeat(np.arange(5), 4)
    idx = sample_evenly(labels, 3, seed=0)
    assert len(idx) == 3 and len(set(labels[idx])) == 3


def test_s2l_select_on_trajectories():
    x, truth = _blobs([40, 8, 4], seed=2)
    idx, labels = s2l_select(x, 12, 3, seed=0)
    assert len(idx) == 12 and set(labels[idx]) == {0, 1, 2}
    # a random subset of that size would mostly come from the big group; S2L takes 4 of each
    assert sorted(np.bincount(truth[idx]).tolist()) == [4, 4, 4]


def test_proxy_trajectories_and_select_training(seeds, tiny_encoder):
    from guardray.core.config import TrainerConfig
    from guardray.selection import POINTS_PER_EPOCH, loss_trajectories, select_training
    data = list(seeds)
    random.Random(0).shuffle(data)
    data = data[:40]
    cfg = TrainerConfig(s2l_proxy_model="tiny-encoder", s2l_epochs=2, s2l_lr=3e-3, batch_size=8, max_length=32,
                        s2l_clusters=4, selection="s2l", selection_budget=12)
    traj = loss_trajectories(data, cfg, seed=0, threads=1)
    assert traj.shape == (40, 2 * POINTS_PER_EPOCH) and np.isfinite(traj).all()
    assert traj[:, -1].mean() < traj[:, 0].mean()  # the proxy learns: mean loss falls along the trajectory
    # in-process without Ray, as one Ray task when a session is up
    subset, info = select_training(dataclasses.replace(cfg, s2l_epochs=1), data, seed=0)
    assert len(subset) == 12 == info["kept"] and info["clusters"] >= 2
    assert all(p >= 1 for p in info["picked_per_cluster"]) and sum(info["picked_per_cluster"]) == 12
    assert {e.id for e in subset} <= {e.id for e in data}
    rnd, rinfo = select_training(TrainerConfig(selection="random", selection_budget=12), data, seed=0)
    assert len(rnd) == 12 and rinfo["method"] == "random"
    everything, ainfo = select_training(TrainerConfig(selection="s2l", selection_budget=0), data)
    assert everything == data and ainfo["method"] == "all"
