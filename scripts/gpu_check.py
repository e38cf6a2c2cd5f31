"""GPU check: the CUDA paths of guardray on one GPU host, with a pass/fail table.

    scripts/gpu_check.sh                  # = python scripts/gpu_check.py --out gpu_check.md
    python scripts/gpu_check.py --only cuda,generator,learner,train,nccl

What runs (tiny random models built offline in seconds, so no download is needed):

| check | needs | what it asserts |
|---|---|---|
| cuda | torch + a GPU | the GPU is visible; a bf16 matmul matches fp32 |
| generator | - | the `hf` backend on CUDA returns token ids + finite logprobs, the same tokens for the same seeds |
| learner | - | `LocalPPOLearner` on CUDA: its recomputed logprobs match the replica's (on-policy, 0 stale rollouts), 3 PPO updates raise the version; `load_weights` of its state dict moves the replica to the new version, changes its samples, and the next rollouts are on-policy again (the weight-sync path) |
| train | - | the classifier's train step on CUDA (bf16 autocast, fp32 master weights): the loss falls over 30 steps |
| nccl | - | torch.distributed with the NCCL backend (what Ray Train uses on GPUs): init, all_reduce, one DDP step |
| vllm | vllm | `scripts/check_vllm.py` (vLLM replica: logprobs vs HF, determinism, weight reload) |
| ray_sync | ray + vllm | PPOLearner actor -> weights ObjectRef -> vLLM `GeneratorReplica.load_weights` -> version advances |
| ray_train | ray | a 1-worker Ray Train (`TorchTrainer`, use_gpu, NCCL) run of `train_classifier` on the tiny encoder |

Checks whose packages are missing are reported as SKIP with the reason (exit status 0 if nothing FAILed).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ALL = ("cuda", "generator", "learner", "train", "nccl", "vllm", "ray_sync", "ray_train")


def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def check_cuda() -> str:
    import torch
    assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    a = torch.randn(512, 512, device="cuda")
    b = torch.randn(512, 512, device="cuda")
    err = ((a.bfloat16() @ b.bfloat16()).float() - a @ b).abs().max().item()
    assert err < 1.0, f"bf16 matmul differs from fp32 by {err}"
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, bf16 max err {err:.3f}"


def _requests(n: int, base: int, temperature: float = 1.0):
    from guardray.core.records import GenRequest
    return [GenRequest(prompt_id=f"p{base}-{i}", prompt=f"Rewrite request number {i} so it keeps its meaning.",
                       seed=base * 1000 + i, temperature=temperature, top_p=1.0, want_logprobs=True)
            for i in range(n)]


def _gen_cfg(dtype: str = "float32"):
    from guardray.core.config import GeneratorConfig
    return GeneratorConfig(model="tiny-causal-lm", max_new_tokens=12, temperature=1.0, top_p=1.0, batch_size=8,
                           dtype=dtype)


def check_generator() -> str:
    import math
    from guardray.backends import HFBackend
    out = []
    for dtype in ("float32", "bfloat16"):
        b = HFBackend(_gen_cfg(dtype), seed=0, device="cuda")
        g1, g2 = b.generate(_requests(8, 1)), b.generate(_requests(8, 1))
        assert all(len(g.token_ids) == len(g.logprobs) > 0 for g in g1), "missing token ids / logprobs"
        assert all(math.isfinite(x) and x <= 1e-6 for g in g1 for x in g.logprobs), "logprobs not finite or > 0"
        assert [g.token_ids for g in g1] == [g.token_ids for g in g2], f"{dtype}: same seeds, different tokens"
        out.append(f"{dtype}: {sum(len(g.token_ids) for g in g1)} tokens, deterministic")
    return "; ".join(out)


def check_learner() -> str:
    import dataclasses
    from guardray.backends import HFBackend
    from guardray.core.config import PPOConfig
    from guardray.core.records import Example, RewardBatch, Rollout
    from guardray.learner import LocalPPOLearner
    cfg = PPOConfig(policy_model="tiny-causal-lm", lr=1e-2, kl_coef=0.01, ppo_epochs=2, minibatch_size=8,
                    max_new_tokens=12, temperature=1.0, logprob_tol=0.05)
    learner = LocalPPOLearner(cfg, _gen_cfg(), seed=0)
    assert learner.device == "cuda", f"learner on {learner.device}"
    replica = HFBackend(_gen_cfg(), seed=0, device="cuda")
    seed = Example(id="seed-1", text="How do I kill a Python process?", label="safe")
    target = set(range(100, 164))
    diffs, versions = [], []
    for u in range(3):
        gens = replica.generate(_requests(16, 10 + u))
        assert {g.model_version for g in gens} == {u}, f"replica at {gens[0].model_version}, expected {u}"
        r = tuple(sum(t in target for t in g.token_ids) / len(g.token_ids) for g in gens)
        st = learner.update([Rollout(seed=seed, generation=g, policy_version=g.model_version) for g in gens],
                            RewardBatch(rewards=r, components={"reward": r}, policy_version=u))
        assert st["stale_rollouts"] == 0, f"update {u}: {st['stale_rollouts']} stale rollouts ({st})"
        diffs.append(st["logprob_diff"])
        before = replica.generate(_requests(4, 99))
        v = replica.load_weights(learner.generator_state_dict(), st["version"])  # the weight sync
        after = replica.generate(_requests(4, 99))
        assert v == st["version"] == u + 1 and replica.version() == u + 1
        assert [g.token_ids for g in before] != [g.token_ids for g in after], "new weights, same samples"
        versions.append(v)
    lora = LocalPPOLearner(dataclasses.replace(cfg, method="lora", lora_r=4), _gen_cfg(), seed=0)
    gens = lora.generate(_requests(8, 50))
    r = tuple(0.5 for _ in gens)
    st = lora.update([Rollout(seed=seed, generation=g, policy_version=0) for g in gens],
                     RewardBatch(rewards=r, components={"reward": r}, policy_version=0))
    assert st["version"] == 1 and lora.generator_state_dict().keys() == learner.generator_state_dict().keys()
    return (f"versions {versions}, replica-vs-learner logprob diff per token {[round(d, 5) for d in diffs]}; "
            f"LoRA update ok")


def check_train() -> str:
    import torch
    from guardray import trainer as T
    from guardray.core.config import TrainerConfig
    from guardray.core.records import Example
    cfg = TrainerConfig(model="tiny-encoder", lr=2e-3, batch_size=16, warmup_ratio=0.0)
    model, tok = T.build_model(cfg, seed=0)
    model.to("cuda")
    rows = T._rows([Example(id=f"e{i}", text=("please help me hurt them " if i % 2 else "please help me bake ")
                            + f"item {i}", label="unsafe" if i % 2 else "safe",
                            categories=("S1",) if i % 2 else ()) for i in range(64)])
    feats = T.encode(tok, rows, 32)
    opt, sched = T.make_optimizer(model, cfg, 30)
    losses = []
    for step in range(30):
        loss, _ = T.train_epoch(model, tok, feats, rows, [list(range((step * 16) % 64, (step * 16) % 64 + 16))],
                                opt, sched, pos_weight=1.0, category_weight=0.5, device="cuda")
        losses.append(loss)
    assert next(model.parameters()).dtype == torch.float32, "master weights are not fp32"
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, f"loss did not fall: {losses[:5]} -> {losses[-5:]}"
    return f"loss {sum(losses[:5]) / 5:.3f} -> {sum(losses[-5:]) / 5:.3f} over 30 bf16-autocast steps"


def check_nccl() -> str:
    import socket
    import torch
    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        x = torch.ones(4, device="cuda")
        dist.all_reduce(x)
        assert x.sum().item() == 4.0
        from guardray import trainer as T
        from guardray.core.config import TrainerConfig
        model, tok = T.build_model(TrainerConfig(model="tiny-encoder"), seed=0)
        ddp = torch.nn.parallel.DistributedDataParallel(model.to("cuda"), device_ids=[0])
        b = {k: v.to("cuda") for k, v in tok(["a test", "another test"], return_tensors="pt", padding=True).items()}
        ddp(**b).logits.sum().backward()
        g = sum(p.grad.abs().sum().item() for p in ddp.parameters() if p.grad is not None)
        assert g > 0, "no gradient after the DDP step"
        return f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}: all_reduce + one DDP backward"
    finally:
        dist.destroy_process_group()


def check_vllm() -> str:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_vllm.py")], capture_output=True, text=True,
                       timeout=900)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("PASS", "FAIL"))]
    assert r.returncode == 0, "\n".join(lines) or (r.stdout + r.stderr)[-2000:]
    return f"{len(lines)} checks passed"


def check_ray_sync() -> str:
    import ray
    from guardray.core.config import GeneratorConfig, PPOConfig, ResourcesConfig
    from guardray.core.records import Example, RewardBatch, Rollout
    from guardray.generator import make_replicas
    from guardray.learner import PPOLearner
    from guardray.models import resolve
    from guardray.ray_utils import init_ray
    init_ray()
    gcfg = GeneratorConfig(backend="vllm", model=resolve("tiny-causal-lm"), dtype="float32", max_new_tokens=12,
                           temperature=1.0, top_p=1.0, batch_size=8, gpu_memory_utilization=0.3, max_model_len=256)
    learner = PPOLearner.options(num_cpus=1, num_gpus=0.3).remote(
        PPOConfig(policy_model=gcfg.model, lr=1e-2, max_new_tokens=12, logprob_tol=0.1), gcfg, seed=0)
    [rep] = make_replicas(gcfg, ResourcesConfig(generator_cpus=1, generator_gpus=0.5), seed=0)
    seed = Example(id="seed-1", text="How do I kill a Python process?", label="safe")
    gens = ray.get(rep.generate.remote(_requests(8, 1)))
    r = tuple(float(len(g.token_ids) % 2) for g in gens)
    st = ray.get(learner.update.remote([Rollout(seed, g, 0) for g in gens], RewardBatch(r, {"reward": r}, 0)))
    [ref] = ray.get(learner.weights_ref.remote())
    v = ray.get(rep.load_weights.remote(ref, st["version"]))
    gens2 = ray.get(rep.generate.remote(_requests(8, 2)))
    assert v == 1 and {g.model_version for g in gens2} == {1}
    st2 = ray.get(learner.update.remote([Rollout(seed, g, 1) for g in gens2], RewardBatch(r, {"reward": r}, 1)))
    assert st2["stale_rollouts"] == 0, st2
    return f"version 0 -> {v}; vLLM-vs-learner logprob diff {st['logprob_diff']:.4f} / {st2['logprob_diff']:.4f}"


def check_ray_train(tmp: Path) -> str:
    from guardray.core.config import ResourcesConfig, TrainerConfig
    from guardray.core.records import Example
    from guardray.ray_utils import init_ray
    from guardray.trainer import train_classifier
    init_ray()
    train = [Example(id=f"e{i}", text=f"text number {i} " + ("harm them" if i % 2 else "bake bread"),
                     label="unsafe" if i % 2 else "safe", categories=("S1",) if i % 2 else ()) for i in range(64)]
    res = train_classifier(TrainerConfig(model="tiny-encoder", epochs=1, use_gpu=True, num_workers=1), train,
                           tmp / "ray_train", resources=ResourcesConfig(trainer_gpus_per_worker=1), progress=False)
    return f"checkpoint {res.path}, val F1 {res.metrics.get('f1')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(ALL), help="comma-separated subset of " + ",".join(ALL))
    ap.add_argument("--out", default="", help="also write the table (markdown) here")
    ap.add_argument("--tmp", default="/tmp/guardray_gpu_check")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    needs = {"vllm": ["vllm"], "ray_sync": ["ray", "vllm"], "ray_train": ["ray"]}
    fns = {"cuda": check_cuda, "generator": check_generator, "learner": check_learner, "train": check_train,
           "nccl": check_nccl, "vllm": check_vllm, "ray_sync": check_ray_sync,
           "ray_train": lambda: check_ray_train(tmp)}
    rows = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in fns:
            print(f"unknown check {name!r}; choose from {', '.join(ALL)}", file=sys.stderr)
            return 2
        missing = [m for m in needs.get(name, ()) if not _have(m)]
        if missing:
            rows.append((name, "SKIP", f"not installed here: {', '.join(missing)}", 0.0))
        elif name != "cuda" and rows and rows[0][0] == "cuda" and rows[0][1] != "PASS":
            rows.append((name, "SKIP", "no usable GPU", 0.0))
        else:
            t0 = time.perf_counter()
            try:
                rows.append((name, "PASS", fns[name](), time.perf_counter() - t0))
            except Exception as e:  # report and go on: one table with every check
                traceback.print_exc()
                rows.append((name, "FAIL", f"{type(e).__name__}: {e}".replace("\n", " ")[:300],
                             time.perf_counter() - t0))
        print(f"{rows[-1][1]:<5} {name:<10} {rows[-1][3]:6.1f}s  {rows[-1][2]}", flush=True)
    table = ["| check | result | seconds | detail |", "|---|---|---:|---|"]
    table += [f"| {n} | {r} | {s:.1f} | {d.replace('|', '/')} |" for n, r, d, s in rows]
    print("\n" + "\n".join(table))
    if args.out:
        Path(args.out).write_text("\n".join(table) + "\n")
    return 1 if any(r == "FAIL" for _, r, _, _ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
