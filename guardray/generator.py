"""GeneratorReplica: the Ray actor that holds a causal LM and writes text (augmentation, RL rollouts).

    replicas = make_replicas(cfg.generator, cfg.resources, seed=cfg.run.seed)
    refs = [r.generate.remote(batch) for r, batch in zip(replicas, batches)]      # -> list[Generation] each
    ray.get([r.load_weights.remote(weights_ref, version) for r in replicas])      # new policy weights, in place

Resources: `resources.generator_cpus` / `resources.generator_gpus` per replica (inside the actor torch uses that
many threads). Backend by `generator.backend`: `hf` (transformers generate, CPU or GPU) or `vllm` (GPU; vLLM is
imported only inside `guardray.backends.VLLMBackend`). Sampling, determinism and the exact logprob definition
are documented in `guardray.backends` (logprobs = log_softmax(logits / T), top-p not applied).

Fault tolerance: replicas restart (`generator.max_restarts`) and re-run lost calls (`generator.max_task_retries`);
`generate` is a pure function of its requests and the weights, so a retried call returns the same generations. A
restarted replica reloads the base model at version 0: whoever pushes weights should compare `version()` with the
version it expects and push again (`info()["restarted"]` tells).
"""
from __future__ import annotations

import os

import ray

from guardray.core.config import GeneratorConfig, ResourcesConfig
from guardray.core.records import Generation, GenRequest


@ray.remote
class GeneratorReplica:
    """One replica: `generate(requests) -> list[Generation]`, `load_weights(state_dict, version) -> int`."""

    def __init__(self, cfg: GeneratorConfig, name: str, seed: int):
        from guardray.backends import make_backend
        self.cfg, self.name, self.seed = cfg, name, int(seed)
        self.backend = make_backend(cfg, seed=self.seed)

    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        return self.backend.generate(requests)

    def load_weights(self, state_dict: dict, version: int) -> int:
        """Replace the weights in place (a caller passes an ObjectRef put once; Ray hands us the dict)."""
        return self.backend.load_weights(state_dict, version)

    def version(self) -> int:
        return self.backend.version()

    def info(self) -> dict:
        return {"name": self.name, "seed": self.seed, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "restarted": was_restarted(), **self.backend.info()}


def was_restarted() -> bool:
    """Whether the calling actor has been restarted (Ray's property warns about an internal deprecation)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def make_replicas(cfg: GeneratorConfig, res: ResourcesConfig, seed: int) -> list:
    """`cfg.replicas` GeneratorReplica actors (ActorHandles), all with the same seed: a request's output then
    depends on the request, not on which replica served it."""
    opts = dict(num_cpus=res.generator_cpus, num_gpus=res.generator_gpus, max_restarts=cfg.max_restarts,
                max_task_retries=cfg.max_task_retries, resources=res.ray_resources("generator"))
    return [GeneratorReplica.options(**opts).remote(cfg, f"generator-{i}", seed) for i in range(cfg.replicas)]
