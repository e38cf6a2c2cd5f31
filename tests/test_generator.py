"""GeneratorReplica and the HF backend on a tiny random GPT-2: logprobs are log_softmax(logits / T) (the PPO
learner's definition), sampling is deterministic per request whatever the batch, EOS and prompt truncation are
handled, load_weights replaces weights in place; real Ray actors survive being killed mid-call."""
import pytest
import torch

from guardray.backends import HFBackend, request_seed
from guardray.core.config import GeneratorConfig, ResourcesConfig
from guardray.core.records import GenRequest

CFG = GeneratorConfig(model="tiny-causal-lm", batch_size=3, max_new_tokens=10, temperature=0.9, top_p=0.95)


@pytest.fixture(scope="module")
def backend(tiny_lm):
    return HFBackend(CFG, seed=0)


def reqs(n, logprobs=True, **kw):
    return [GenRequest(f"p{i}", "Write a short question about cats." + " again" * i, want_logprobs=logprobs, **kw)
            for i in range(n)]


def recompute(model, g, temperature):
    ids = torch.tensor([list(g.prompt_token_ids) + list(g.token_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    p = len(g.prompt_token_ids)
    return torch.log_softmax(logits[p - 1:-1] / temperature, -1).gather(1, torch.tensor(g.token_ids)[:, None])[:, 0]


def test_logprobs_are_temperature_scaled_log_softmax(backend):
    gens = backend.generate(reqs(5))
    assert [g.prompt_id for g in gens] == [f"p{i}" for i in range(5)]
    for g in gens:
        assert len(g.token_ids) == len(g.logprobs) == 10 and g.finish_reason == "length"
        assert g.model_version == 0 and g.generator == "tiny-causal-lm@0"
        assert g.sampling["temperature"] == 0.9 and g.sampling["top_p"] == 0.95 and not g.sampling["prompt_truncated"]
        assert torch.allclose(recompute(backend.model, g, 0.9), torch.tensor(g.logprobs), atol=1e-4)
    # the chat template was applied to the prompt
    assert backend.tokenizer.decode(gens[0].prompt_token_ids).endswith("assistant: ")
    assert backend.info()["requests"] >= 5


def test_deterministic_per_request_whatever_the_batch(backend):
    a = backend.generate(reqs(5))
    other = HFBackend(CFG.__class__(**{**CFG.__dict__, "batch_size": 5}), seed=0)
    b = other.generate(list(reversed(reqs(5))))[::-1]
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert max(abs(x - y) for g, h in zip(a, b) for x, y in zip(g.logprobs, h.logprobs)) < 1e-4
    c = backend.generate([GenRequest("p0", reqs(1)[0].prompt, want_logprobs=True, seed=123)])
    assert c[0].sampling["seed"] == 123 and a[0].sampling["seed"] == request_seed(0, "p0")
    assert c[0].token_ids != a[0].token_ids  # a different seed samples differently


def test_greedy_and_tiny_top_p_agree_with_argmax(backend):
    greedy = backend.generate(reqs(3, temperature=0.0))
    for g in greedy:  # temperature 0: argmax, logprobs at T=1
        ids = torch.tensor([list(g.prompt_token_ids) + list(g.token_ids)])
        with torch.no_grad():
            logits = backend.model(ids).logits[0]
        p = len(g.prompt_token_ids)
        assert logits[p - 1:-1].argmax(-1).tolist() == list(g.token_ids)
        assert torch.allclose(recompute(backend.model, g, 1.0), torch.tensor(g.logprobs), atol=1e-4)
    nucleus = backend.generate(reqs(3, top_p=1e-6))  # a nucleus of one token is argmax
    assert [g.token_ids for g in nucleus] == [g.token_ids for g in greedy]


def test_long_prompts_are_cut_from_the_left(backend):
    long = GenRequest("long", "tell me something " * 200, want_logprobs=True)
    [g] = backend.generate([long])
    assert g.sampling["prompt_truncated"] and len(g.prompt_token_ids) <= backend.max_positions - 10
    assert backend.tokenizer.decode(g.prompt_token_ids).endswith("assistant: ")


def test_load_weights_in_place_stops_at_eos_and_rejects_bad_dicts(tiny_lm):
    b = HFBackend(CFG, seed=0)
    before = b.generate(reqs(2))
    eos = b.tokenizer.eos_token_id
    wte = b.model.state_dict()["transformer.wte.weight"]
    # final layer norm outputs a constant vector along EOS's (tied) output embedding: every next token is EOS
    w = wte[eos]
    sd = {"transformer.ln_f.weight": torch.zeros_like(w), "transformer.ln_f.bias": w / w.dot(w) * 100.0}
    assert b.load_weights(sd, 7) == 7 and b.version() == 7
    after = b.generate(reqs(2))
    for g in after:
        assert g.token_ids == (eos,) and g.finish_reason == "stop" and g.text == "" and len(g.logprobs) == 1
        assert g.model_version == 7 and g.generator == "tiny-causal-lm@7"
    assert before[0].token_ids != after[0].token_ids
    with pytest.raises(ValueError, match="not weights of"):
        b.load_weights({"value_head.weight": torch.zeros(1)}, 8)
    with pytest.raises(ValueError, match="shape mismatch"):
        b.load_weights({"transformer.ln_f.bias": torch.zeros(3)}, 8)
    assert b.version() == 7
    with pytest.raises(TypeError):
        b.generate(["not a request"])


def test_replicas_fan_out_weight_sync_and_survive_a_kill(ray_session, tiny_lm):
    ray = ray_session
    from guardray.generator import make_replicas
    cfg = CFG.__class__(**{**CFG.__dict__, "replicas": 2, "max_task_retries": 3, "max_restarts": 2})
    r0, r1 = make_replicas(cfg, ResourcesConfig(generator_cpus=0.5), seed=0)
    try:
        batches = [[GenRequest(f"b{j}-{i}", f"Question {j} {i} about dogs.") for i in range(4)] for j in range(4)]
        ref1 = [r1.generate.remote(b) for b in batches]
        ref0 = [r0.generate.remote(b) for b in batches]
        ray.wait(ref0, num_returns=1)
        ray.kill(r0, no_restart=False)  # mid-stage: queued and running calls are retried after the restart
        out0, out1 = ray.get(ref0), ray.get(ref1)
        assert [[g.text for g in b] for b in out0] == [[g.text for g in b] for b in out1]  # same seed, same output
        info = ray.get(r0.info.remote())
        assert info["restarted"] and info["version"] == 0 and info["backend"] == "hf" and info["name"] == "generator-0"
        # weight sync: one ObjectRef, resolved by Ray into the dict on each replica
        sd = {k: v + 0.05 for k, v in HFBackend(CFG).model.state_dict().items() if k.startswith("transformer.h.0")}
        wref = ray.put(sd)
        assert ray.get([r.load_weights.remote(wref, 1) for r in (r0, r1)]) == [1, 1]
        new = ray.get(r0.generate.remote(batches[0]))
        assert all(g.model_version == 1 for g in new) and ray.get(r1.version.remote()) == 1
        assert [g.text for g in new] != [g.text for g in out0[0]]
    finally:
        ray.kill(r0)
        ray.kill(r1)
