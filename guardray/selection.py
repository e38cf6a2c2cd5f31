"""Training-data selection for the classifier: `selection: all | random | s2l` with `selection_budget`.

S2L (our reading of arXiv:2403.07384, see guardray.core.s2l): a small proxy classifier (`trainer.s2l_proxy_model`,
default `tiny-encoder`; `minilm` is a stronger proxy) is trained on the whole training split for `s2l_epochs` epochs
at `s2l_lr`, with the trainer's loss; each example's loss is recorded twice per epoch (mid-epoch and end of epoch),
the trajectories are clustered with k-means (`s2l_clusters`) and the budget is filled evenly across the clusters.
The proxy runs as one Ray task with the resources of one trainer worker (so it lands on a GPU when training does);
without a running Ray it runs in-process.

    subset, info = select_training(cfg.trainer, train, seed=0, resources=cfg.resources)
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from guardray.core.config import ResourcesConfig, TrainerConfig
from guardray.core.records import Example

POINTS_PER_EPOCH = 2  # loss snapshots per proxy epoch (trajectory length = 2 * s2l_epochs)


def loss_trajectories(examples: list[Example], cfg: TrainerConfig, *, seed: int = 0, threads: int = 0,
                      device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Train the proxy `cfg.s2l_proxy_model` on `examples`; return per-example losses [n, POINTS_PER_EPOCH*epochs]."""
    import torch
    from guardray import train_steps as T
    from guardray.core.splits import example_rows, pos_weight
    if threads:
        torch.set_num_threads(threads)
    pcfg = dataclasses.replace(cfg, model=cfg.s2l_proxy_model, method="full", warm_start="", lr=cfg.s2l_lr,
                               epochs=cfg.s2l_epochs)
    model, tok = T.build_model(pcfg, seed)
    model.to(device)
    rows = example_rows(examples)
    feats = T.encode(tok, rows, pcfg.max_length)
    pw = pos_weight(examples, pcfg.class_weight)
    steps = len(T.epoch_batches(len(rows), pcfg.batch_size, 0, seed)) * pcfg.epochs
    opt, sched = T.make_optimizer(model, pcfg, steps)
    everyone = list(range(len(rows)))
    points = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"S2L proxy {pcfg.model}", unit="step")
    for epoch in range(1, pcfg.epochs + 1):
        batches = T.epoch_batches(len(rows), pcfg.batch_size, epoch, seed)
        half = max(1, len(batches) // POINTS_PER_EPOCH)
        for part in range(POINTS_PER_EPOCH):
            chunk = batches[part * half:] if part == POINTS_PER_EPOCH - 1 else batches[part * half:(part + 1) * half]
            T.train_epoch(model, tok, feats, rows, chunk, opt, sched, pos_weight=pw,
                          category_weight=pcfg.category_loss_weight, device=device, progress=bar)
            _, loss = T.predict(model, tok, feats, rows, everyone, max(pcfg.batch_size, 64), pos_weight=pw,
                                category_weight=pcfg.category_loss_weight, device=device)
            points.append(loss)
    if bar is not None:
        bar.close()
    return np.stack(points, axis=1)


def select_training(cfg: TrainerConfig, train: list[Example], *, seed: int = 0,
                    resources: ResourcesConfig | None = None, progress: bool = False
                    ) -> tuple[list[Example], dict]:
    """Apply `cfg.selection` to the training split -> (subset in original order, info for the model card)."""
    budget = cfg.selection_budget
    if cfg.selection == "all" or budget == 0 or budget >= len(train):
        return list(train), {"method": "all" if cfg.selection == "all" or budget == 0 else cfg.selection,
                             "kept": len(train), "budget": budget}
    if cfg.selection == "random":
        idx = np.sort(np.random.default_rng(seed).choice(len(train), size=budget, replace=False))
        return [train[i] for i in idx], {"method": "random", "kept": budget, "budget": budget}
    from guardray.core.s2l import s2l_select
    t0 = time.perf_counter()
    traj = _proxy_trajectories(train, cfg, seed, resources or ResourcesConfig(), progress)
    idx, labels = s2l_select(traj, budget, cfg.s2l_clusters, seed)
    sizes = np.bincount(labels)
    info = {"method": "s2l", "kept": int(len(idx)), "budget": budget, "proxy": cfg.s2l_proxy_model,
            "proxy_epochs": cfg.s2l_epochs, "trajectory_points": int(traj.shape[1]), "clusters": int(len(sizes)),
            "cluster_sizes": sizes.tolist(),
            "picked_per_cluster": np.bincount(labels[idx], minlength=len(sizes)).tolist(),
            "seconds": round(time.perf_counter() - t0, 1)}
    if progress:
        print(f"[guardray train] S2L kept {len(idx)} of {len(train)} examples from {len(sizes)} clusters "
              f"(sizes {sizes.tolist()}, picked {info['picked_per_cluster']}) in {info['seconds']} s", flush=True)
    return [train[i] for i in idx], info


def _proxy_trajectories(train, cfg: TrainerConfig, seed: int, resources: ResourcesConfig, progress: bool):
    import ray
    threads = max(1, int(resources.trainer_cpus_per_worker))
    if not ray.is_initialized():
        return loss_trajectories(train, cfg, seed=seed, threads=threads, progress=progress)
    gpus = (resources.trainer_gpus_per_worker or 1.0) if cfg.use_gpu else 0
    task = ray.remote(num_cpus=resources.trainer_cpus_per_worker, num_gpus=gpus,
                      resources=resources.ray_resources("trainer"))(_proxy_task)
    return ray.get(task.remote(train, cfg, seed, threads, "cuda" if gpus else "cpu"))


def _proxy_task(train, cfg, seed, threads, device):
    return loss_trajectories(train, cfg, seed=seed, threads=threads, device=device)
