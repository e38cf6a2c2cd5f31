"""Check the vLLM generator backend on a GPU host, through the same interface the pipeline uses.

    pip install '.[gpu]'                      # vLLM, on a machine with a CUDA GPU
    python scripts/check_vllm.py              # tiny random GPT-2 (built offline in seconds), via a Ray actor
    python scripts/check_vllm.py --model smollm2-135m --no-ray

What it checks (prints PASS/FAIL per line, exits 1 on any failure):
 1. a `GeneratorReplica` with generator.backend=vllm starts (Ray actor, num_gpus=1) and reports its info;
 2. `generate` with want_logprobs returns completion token ids and one finite logprob <= 0 per token;
 3. those logprobs equal log_softmax(logits / T) recomputed by the HF model in float32 (the PPO learner's
    definition, see guardray/backends.py) within --tol on average;
 4. the same requests with the same seeds give the same tokens (determinism under a seed);
 5. `load_weights(perturbed state dict, version=1)` returns 1, changes the generations, and `version()` is 1;
 6. loading the original weights back (version=2) reproduces the original generations (weights really were
    replaced in place, and the prefix cache was reset).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-causal-lm")
    ap.add_argument("--no-ray", action="store_true", help="use VLLMBackend directly instead of a GeneratorReplica")
    ap.add_argument("--tol", type=float, default=2e-3, help="max mean |logprob difference| vs the HF recomputation")
    ap.add_argument("--max-model-len", type=int, default=256)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from guardray.core.config import GeneratorConfig, ResourcesConfig
    from guardray.core.records import GenRequest
    from guardray.models import load_causal_lm, resolve

    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> bool:
        results.append((name, bool(ok), detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
        return bool(ok)

    if not torch.cuda.is_available():
        print("FAIL  no CUDA GPU: run this on a GPU host")
        return 1
    path = resolve(args.model)
    cfg = GeneratorConfig(backend="vllm", model=path, dtype="float32", max_new_tokens=24, temperature=0.8,
                          top_p=1.0, batch_size=8, gpu_memory_utilization=0.3, max_model_len=args.max_model_len)
    t0 = time.perf_counter()
    if args.no_ray:
        from guardray.backends import VLLMBackend
        b = VLLMBackend(cfg, seed=0)
        call = lambda m, *a: getattr(b, m)(*a)  # noqa: E731
    else:
        import ray
        from guardray.generator import make_replicas
        from guardray.ray_utils import init_ray
        init_ray()
        [rep] = make_replicas(cfg, ResourcesConfig(generator_cpus=1, generator_gpus=1), seed=0)
        call = lambda m, *a: ray.get(getattr(rep, m).remote(*a))  # noqa: E731
    info = call("info")
    check("replica starts", info.get("backend") == "vllm", f"{info} in {time.perf_counter() - t0:.0f}s")

    reqs = [GenRequest(f"p{i}", f"Write a short question about topic number {i}.", want_logprobs=True)
            for i in range(8)]
    g1 = call("generate", reqs)
    ok = all(len(g.token_ids) == len(g.logprobs) > 0 for g in g1) and \
        all(math.isfinite(x) and x <= 1e-6 for g in g1 for x in g.logprobs)
    check("generate returns token ids and logprobs", ok,
          f"tokens per completion {[len(g.token_ids) for g in g1]}, version {g1[0].model_version}")

    hf = load_causal_lm(args.model, dtype="float32", device="cuda").eval()
    diffs = []
    with torch.no_grad():
        for g in g1:
            ids = torch.tensor([list(g.prompt_token_ids) + list(g.token_ids)], device="cuda")
            logits = hf(ids).logits[0].float()
            p = len(g.prompt_token_ids)
            lp = torch.log_softmax(logits[p - 1:-1] / cfg.temperature, -1)
            ref = lp.gather(1, torch.tensor(g.token_ids, device="cuda")[:, None])[:, 0].cpu()
            diffs.append((ref - torch.tensor(g.logprobs)).abs().mean().item())
    check("logprobs = log_softmax(logits / T) (HF recomputation)", max(diffs) <= args.tol,
          f"mean |diff| per completion: max {max(diffs):.2e} (tol {args.tol})")

    g1b = call("generate", reqs)
    check("deterministic under a seed", [g.token_ids for g in g1] == [g.token_ids for g in g1b])

    orig = {k: v.detach().cpu().clone() for k, v in hf.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    perturbed = {k: v + 0.5 * v.float().std().clamp(min=1e-3) * torch.randn(v.shape, generator=gen)
                 if v.dtype.is_floating_point and v.dim() >= 2 else v for k, v in orig.items()}
    v = call("load_weights", perturbed, 1)
    g2 = call("generate", reqs)
    changed = sum(a.token_ids != b.token_ids or a.logprobs != b.logprobs for a, b in zip(g1, g2))
    check("load_weights(perturbed) changes outputs", v == 1 and changed == len(reqs) and call("version") == 1
          and all(g.model_version == 1 for g in g2), f"returned {v}, {changed}/{len(reqs)} completions changed")

    v = call("load_weights", orig, 2)
    g3 = call("generate", reqs)
    same = sum(a.token_ids == b.token_ids for a, b in zip(g1, g3))
    check("load_weights(original) restores outputs", v == 2 and same == len(reqs),
          f"{same}/{len(reqs)} completions identical to the first run")

    failed = [n for n, ok, _ in results if not ok]
    print(("ALL PASS" if not failed else f"FAILED: {failed}") + f"  ({time.perf_counter() - t0:.0f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
