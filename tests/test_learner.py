"""PPOLearner: it learns (a tiny policy raises a verifiable reward), rejects stale rollouts, publishes plain HF weights
(LoRA merged), and syncs them into a real GeneratorReplica. Real Ray actors and a tiny random GPT-2 on CPU.

Run: .venv/bin/pytest -q tests/test_learner.py   (~1-2 min on 2 busy cores)
"""
import dataclasses

import pytest
import torch

from guardray.core.config import GeneratorConfig, PPOConfig
from guardray.core.records import Example, GenRequest, RewardBatch, Rollout

PROMPT = "Rewrite this request so it keeps its meaning."
TARGET = set(range(100, 164))  # 1/8 of the tiny vocabulary: a random policy hits it ~12% of the time
SEED = Example(id="seed-1", text="How do I kill a Python process?", label="safe")
CFG = PPOConfig(policy_model="tiny-causal-lm", lr=1e-2, kl_coef=0.01, ppo_epochs=2, minibatch_size=16,
                precision="fp32", max_new_tokens=8, temperature=1.0)  # fp32: exact agreement with the replica
GEN = GeneratorConfig(model="tiny-causal-lm", max_new_tokens=8, temperature=1.0, top_p=1.0, batch_size=16)


def target_reward(g) -> float:
    """The verifiable reward: share of completion tokens from TARGET."""
    return sum(t in TARGET for t in g.token_ids) / len(g.token_ids)


def requests(n, base_seed, prompt=PROMPT):
    return [GenRequest(prompt_id=f"p{base_seed}-{i}", prompt=prompt, seed=base_seed * 1000 + i,
                       temperature=1.0, top_p=1.0, want_logprobs=True) for i in range(n)]


def rollouts_of(gens):
    return [Rollout(seed=SEED, generation=g, policy_version=g.model_version) for g in gens]


def rewards_of(gens, version):
    r = tuple(target_reward(g) for g in gens)
    return RewardBatch(rewards=r, components={"reward": r}, policy_version=version)


@pytest.fixture(scope="module")
def learner(ray_session):
    from guardray.learner import PPOLearner
    a = PPOLearner.options(num_cpus=1).remote(CFG, GEN, seed=0)
    yield a
    ray_session.kill(a)


def test_ppo_learner_raises_a_verifiable_reward(ray_session, learner):
    ray = ray_session
    from guardray.learner import StaleRolloutError
    means, stats = [], []
    for u in range(10):
        gens = ray.get(learner.generate.remote(requests(32, u)))
        assert all(g.model_version == u and len(g.logprobs) == len(g.token_ids) > 0 for g in gens)
        batch = rewards_of(gens, u)
        means.append(sum(batch.rewards) / len(batch.rewards))
        stats.append(ray.get(learner.update.remote(rollouts_of(gens), batch)))
        if u == 0:  # the old rollouts are now stale: never used silently
            with pytest.raises(StaleRolloutError, match="stale"):
                ray.get(learner.update.remote(rollouts_of(gens), batch))
    fresh = ray.get(learner.generate.remote(requests(64, 999)))
    after = sum(map(target_reward, fresh)) / len(fresh)
    print("mean reward per update:", [round(m, 3) for m in means], "after:", round(after, 3))
    for k in ("loss", "policy_loss", "value_loss", "kl", "clipfrac", "mean_reward", "kl_coef", "version",
              "stale_rollouts"):
        assert k in stats[-1], k
    assert [s["version"] for s in stats] == list(range(1, 11))
    assert ray.get(learner.version.remote()) == 10
    assert all(s["stale_rollouts"] == 0 and s["logprob_diff"] < 1e-3 for s in stats)
    assert stats[0]["mean_reward"] == pytest.approx(means[0])
    # behaviour, not an exact loss: the reward rises well above the random policy's ~0.125 ...
    assert sum(means[-2:]) / 2 > sum(means[:2]) / 2 + 0.15, means
    assert after > means[0] + 0.15, (means, after)
    # ... and the policy moved away from the frozen reference (so the KL penalty has something to act on)
    assert stats[-1]["kl"] > 0.1


def test_stale_rollouts_drop_and_recompute_are_reported():
    from guardray.learner import LocalPPOLearner, StaleRolloutError
    drop = LocalPPOLearner(dataclasses.replace(CFG, stale_rollouts="drop"), GEN, seed=1)
    old = drop.generate(requests(8, 1))
    drop.update(rollouts_of(old), rewards_of(old, 0))
    new = drop.generate(requests(8, 2))
    mixed = old[:3] + new
    st = drop.update(rollouts_of(mixed), rewards_of(mixed, 1))
    assert st["stale_rollouts"] == 3 and st["dropped_rollouts"] == 3 and st["n_rollouts"] == 11
    with pytest.raises(StaleRolloutError, match="all 3 rollouts are stale"):
        drop.update(rollouts_of(old[:3]), rewards_of(old[:3], 0))
    # a replica that claims the current version but holds other weights is caught by its logprobs
    forged = [dataclasses.replace(g, model_version=2, logprobs=tuple(x - 2.0 for x in g.logprobs)) for g in new]
    with pytest.raises(StaleRolloutError, match="all 8 rollouts are stale"):
        drop.update(rollouts_of(forged), rewards_of(forged, 2))
    # "recompute": the same learner told to use stale rollouts anyway; they are counted, not dropped
    rec = drop
    rec.cfg = dataclasses.replace(CFG, stale_rollouts="recompute")
    st = rec.update(rollouts_of(old), rewards_of(old, 0))
    assert st["stale_rollouts"] == 8 and st["dropped_rollouts"] == 0 and st["version"] == 3
    # wiring mistakes are refused with a message naming the fix
    from guardray.errors import UsageError
    with pytest.raises(UsageError, match="want_logprobs=True"):
        rec.update([Rollout(SEED, dataclasses.replace(old[0], token_ids=()), 3)], rewards_of(old[:1], 3))
    with pytest.raises(UsageError, match="temperature"):
        hot = dataclasses.replace(old[0], sampling={"temperature": 0.7}, model_version=3)
        rec.update([Rollout(SEED, hot, 3)], rewards_of(old[:1], 3))
    with pytest.raises(UsageError, match="rewards"):
        rec.update(rollouts_of(old), rewards_of(old[:2], 3))


def test_lora_learner_publishes_merged_plain_weights_and_saves(tmp_path):
    from transformers import AutoModelForCausalLM
    from guardray.learner import LocalPPOLearner
    from guardray.models import load_causal_lm
    lr = LocalPPOLearner(dataclasses.replace(CFG, method="lora", lora_r=4, lr=5e-2), GEN, seed=0)
    gens = lr.generate(requests(16, 3))
    st = lr.update(rollouts_of(gens), rewards_of(gens, 0))
    assert st["version"] == 1 and st["grad_norm"] > 0
    sd = lr.generator_state_dict()
    plain = load_causal_lm("tiny-causal-lm", dtype="float32").eval()
    assert set(sd) == set(plain.state_dict())
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    assert any(not torch.equal(sd[k], before[k]) for k in sd), "the adapter's update is not in the weights"
    plain.load_state_dict(sd)
    x = torch.tensor([list(gens[0].prompt_token_ids) + list(gens[0].token_ids)])
    with torch.no_grad():
        want = lr.policy(input_ids=x).logits
        assert torch.allclose(plain(input_ids=x).logits, want, atol=1e-4)
        with lr.policy.disable_adapter():  # the reference is the untouched base model
            assert torch.allclose(lr.policy(input_ids=x).logits, before_logits(before, x), atol=1e-5)
    out = lr.save(str(tmp_path / "policy"))
    assert (tmp_path / "policy" / "model.safetensors").exists()
    assert (tmp_path / "policy" / "value_head.safetensors").exists()
    saved = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.allclose(saved(input_ids=x).logits, want, atol=1e-4)
    # resuming from the saved folder keeps the version count and the critic
    back = LocalPPOLearner(dataclasses.replace(CFG, policy_model=out), GEN, seed=0)
    assert back.version() == 1
    assert torch.equal(back.value_head.linear.weight, lr.value_head.linear.weight)


def before_logits(state, x):
    from guardray.models import load_causal_lm
    m = load_causal_lm("tiny-causal-lm", dtype="float32").eval()
    m.load_state_dict(state)
    return m(input_ids=x).logits


def test_weights_sync_from_learner_to_generator_replica(ray_session, learner):
    """Replica rollouts -> learner update -> weights ObjectRef (put once) -> replica.load_weights: the replica's
    version advances, its generations change, and its logprobs agree with the learner's own recomputation."""
    generator = pytest.importorskip("guardray.generator", reason="guardray/generator.py (GeneratorReplica) is not "
                                                                 "written yet")
    ray = ray_session
    start = ray.get(learner.version.remote())
    replica = generator.GeneratorReplica.options(num_cpus=1).remote(GEN, "replica-0", 0)
    # bring the replica to the learner's current weights first (the learner may already be trained)
    [ref] = ray.get(learner.weights_ref.remote())
    assert ray.get(learner.weights_ref.remote())[0] == ref  # put once per version
    assert ray.get(replica.load_weights.remote(ref, start)) == start
    reqs = requests(16, 7, prompt="Say something about cats.")
    gens = ray.get(replica.generate.remote(reqs))
    assert all(g.model_version == start and g.logprobs for g in gens)
    stats = ray.get(learner.update.remote(rollouts_of(gens), rewards_of(gens, start)))
    # the replica's logprobs (left-padded batched HF generate) match the learner's (right-padded) recomputation
    assert stats["stale_rollouts"] == 0 and stats["logprob_diff"] < 1e-3, stats
    [ref2] = ray.get(learner.weights_ref.remote())
    assert ref2 != ref
    assert ray.get(replica.load_weights.remote(ref2, stats["version"])) == start + 1
    assert ray.get(replica.version.remote()) == start + 1
    gens2 = ray.get(replica.generate.remote(reqs))  # same requests, same sampling seeds, new weights
    assert all(g.model_version == start + 1 for g in gens2)
    assert any(a.logprobs != b.logprobs for a, b in zip(gens, gens2))
    # and the new rollouts are on-policy for the learner again
    stats2 = ray.get(learner.update.remote(rollouts_of(gens2), rewards_of(gens2, start + 1)))
    assert stats2["stale_rollouts"] == 0 and stats2["logprob_diff"] < 1e-3, stats2
    ray.kill(replica)
