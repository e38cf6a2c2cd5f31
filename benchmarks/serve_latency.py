"""Latency at concurrency 1, one server up at a time: what a single caller waits for one short prompt.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_latency.py --model runs/demo/classifier/round-2

serve_bench.py keeps every system up at once (idle while another is measured) and drives them with an asyncio
httpx client; on 2 cores the idle clusters' background work and the async client add milliseconds to every request
at concurrency 1. Here each system runs alone (`guardray serve` in its own process with its own local Ray, or the
naive FastAPI server of serve_bench.py), a plain synchronous httpx client sends `--requests` short XSTest prompts
one after another (after 20 warm-up requests), and the systems are measured `--rounds` times in turn, so that a
drift in background load hits every system alike. Same checkpoint and torch threads everywhere.
Evaluation data: ../shared/data/xstest/eval.jsonl (read only; prompts of <= 32 tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_bench import DATA, free_port, wait_healthy  # noqa: E402

SYSTEMS = {  # name -> `guardray serve` overrides (None = the naive server)
    "naive": None,
    "guardray": [],
    "single": ["serve.topology=single"],
    "haproxy-single": ["serve.topology=single", "serve.ingress=haproxy"],
    "haproxy-single-int8": ["serve.topology=single", "serve.ingress=haproxy", "serve.quantize=int8"],
}


def start(name: str, model: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_worker_niceness": "0",
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
    env.pop("RAY_ADDRESS", None)
    if SYSTEMS[name] is None:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "serve_bench.py"), "--naive-server", model, "--port",
               str(port), "--threads", str(threads)]
    else:
        cmd = [sys.executable, "-m", "guardray.cli", "serve", "--model", model, "--port", str(port),
               f"serve.threads={threads}", "serve.api_key_env=", "resources.serve_cpus=1", *SYSTEMS[name]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def measure(url: str, texts: list[str], n: int) -> list[float]:
    import httpx
    lat = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for t in texts[:20]:
            c.post("/v1/classify", json={"input": t})
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/v1/classify", json={"input": texts[i % len(texts)]})
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return lat


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint folder")
    ap.add_argument("--requests", type=int, default=300, help="sequential requests per system and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--system", action="append", choices=list(SYSTEMS), help="subset (default: all)")
    args = ap.parse_args(argv)
    f = DATA / "xstest" / "eval.jsonl"
    if not f.exists():
        sys.exit(f"serve_latency: {f} not found; the benchmark reads ../shared/data (see its README)")
    texts = [json.loads(x)["text"] for x in f.read_text().splitlines() if x.strip()]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model)
    texts = [t for t in texts if len(tok(t)["input_ids"]) <= 32]
    lat: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name in args.system or list(SYSTEMS):
            proc, url = start(name, args.model, args.threads)
            try:
                wait_healthy(url, seconds=300, proc=proc)
                time.sleep(10)  # the new cluster's start-up work
                got = measure(url, texts, args.requests)
                lat.setdefault(name, []).extend(got)
                print(f"round {r + 1} {name:20s} p50 {np.median(got) * 1000:6.2f} ms (load avg "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"\nMachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; model {args.model}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}; {args.rounds} x {args.requests} sequential short prompts per system\n")
    print("| system | requests | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for name, v in lat.items():
        q = np.percentile(np.array(v) * 1000, [50, 95, 99])
        print(f"| {name} | {len(v)} | {q[0]:.1f} | {q[1]:.1f} | {q[2]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
