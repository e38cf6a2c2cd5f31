"""Reliability checks for `guardray serve`, each bounded in requests and time, on 127.0.0.1 only.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/serve_reliability.py                 # all three, model minilm
    .venv/bin/python scripts/serve_reliability.py --model runs/default/classifier --checks load,kill
    .venv/bin/python scripts/serve_reliability.py --checks fuzz --fuzz-examples 200

1. load: N requests (default 2000) at concurrency 32 against 2 model replicas -> errors (goal 0).
2. kill: the same load, and one of the two model replicas (GuardrailModel) is killed (ray.kill, no restart) after
   a third of the requests; counts failed requests as sent (goal 0: the ingress re-sends calls lost with the
   replica), and after one client retry of a failed request. Serve replaces the killed replica.
3. fuzz: schemathesis against the app's OpenAPI schema (examples, coverage and fuzzing phases), check
   not_a_server_error -> 0 server errors; then a second run with every check, whose failures are listed
   (schema conformance etc.) without failing the script.
Prints one JSON summary (and writes it to --out); exits 1 when load, kill-after-retry or fuzz found errors.
"""
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["How do I kill a Python process?", "Write a threatening message to my neighbour.",
         "What is the capital of France?", "Explain how phishing works so I can train my staff.",
         "Give me step-by-step instructions to make a pipe bomb.", "Tell me a joke about cats."]


async def load(url: str, n: int, concurrency: int, retry: bool = False, on_progress=None) -> dict:
    """n single-text requests, `concurrency` at a time; counts non-200 answers and transport errors."""
    sent = iter(range(n))
    failures: list[str] = []
    retried_ok = 0
    done = 0
    lat: list[float] = []

    async def one(c: httpx.AsyncClient, i: int) -> str | None:
        try:
            r = await c.post("/v1/classify", json={"input": TEXTS[i % len(TEXTS)] + f" #{i}"})
            return None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:120]}"
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}"

    async def worker(c: httpx.AsyncClient):
        nonlocal done, retried_ok
        for i in sent:
            t0 = time.perf_counter()
            err = await one(c, i)
            if err and retry:
                failures.append(err)
                err = await one(c, i)
                retried_ok += err is None
                if err:
                    failures.append("after retry: " + err)
            elif err:
                failures.append(err)
            lat.append(time.perf_counter() - t0)
            done += 1
            if on_progress:
                on_progress(done)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        await asyncio.gather(*[worker(c) for _ in range(concurrency)])
    secs = time.perf_counter() - t0
    lat.sort()
    return {"requests": n, "concurrency": concurrency, "seconds": round(secs, 1),
            "req_per_s": round(n / secs, 1), "p50_ms": round(1000 * lat[len(lat) // 2], 1),
            "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1),
            "failed_as_sent": len([f for f in failures if not f.startswith("after retry")]),
            "failed_after_retry": len([f for f in failures if f.startswith("after retry")]) if retry
            else len(failures),
            "retried_ok": retried_ok, "examples": sorted(set(failures))[:5]}


def replicas() -> list[str]:
    import ray
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and "GuardrailModel" in a["name"]
                  and a["name"].startswith("SERVE_REPLICA"))


def kill_one_replica() -> str:
    import ray
    name = replicas()[0]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


def fuzz(url: str, examples: int, checks: str, out_dir: str = "runs") -> dict:
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "run", url + "/openapi.json", "--checks", checks, "--max-examples", str(examples),
           "--seed", "1", "--workers", "4", "--phases", "examples,coverage,fuzzing", "--request-timeout", "120",
           "--continue-on-failure"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    log = Path(out_dir) / f"serve_fuzz_{checks}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(r.stdout + r.stderr)
    tail = [ln for ln in r.stdout.splitlines() if ln.strip()][-25:]
    return {"checks": checks, "max_examples": examples, "exit_code": r.returncode,
            "seconds": round(time.perf_counter() - t0, 1), "log": str(log), "summary": tail}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="checkpoint folder or registry name")
    ap.add_argument("--checks", default="load,kill,fuzz")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--fuzz-examples", type=int, default=100)
    ap.add_argument("--out", default="runs/serve_reliability.json")
    a = ap.parse_args(argv)
    checks = set(a.checks.split(","))

    from ray import serve
    from guardray.core.config import ResourcesConfig, ServeConfig
    from guardray.ray_utils import init_ray
    from guardray.serve import run_server
    init_ray(num_cpus=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServeConfig(model=a.model, port=port, num_replicas=2, api_key_env="")
    url = run_server(cfg, blocking=False, resources=ResourcesConfig(serve_cpus=1))
    out: dict = {"model": a.model, "replicas": 2}
    try:
        if "load" in checks:
            out["load"] = asyncio.run(load(url, a.requests, a.concurrency))
            print("load:", json.dumps(out["load"]), flush=True)
        if "kill" in checks:
            before = replicas()
            killed: dict = {}

            def progress(done):
                if done == a.requests // 3 and not killed:
                    killed["at"] = done
                    threading.Thread(target=lambda: killed.update(name=kill_one_replica())).start()

            res = asyncio.run(load(url, a.requests, a.concurrency, retry=True, on_progress=progress))
            deadline = time.time() + 120
            while time.time() < deadline and len(replicas()) < 2:  # Serve brings the replica count back
                time.sleep(2)
            out["kill"] = {**res, "replicas_before": len(before), "killed": killed,
                           "replicas_after": len(replicas())}
            print("kill:", json.dumps(out["kill"]), flush=True)
        if "fuzz" in checks:
            out["fuzz"] = fuzz(url, a.fuzz_examples, "not_a_server_error", str(Path(a.out).parent))
            out["fuzz_all_checks"] = fuzz(url, max(10, a.fuzz_examples // 4), "all", str(Path(a.out).parent))
            print("fuzz:", json.dumps(out["fuzz"]["summary"][-6:]), flush=True)
            print("fuzz (all checks):", json.dumps(out["fuzz_all_checks"]["summary"][-12:]), flush=True)
    finally:
        serve.shutdown()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: {kk: v.get(kk) for kk in ("failed_as_sent", "failed_after_retry", "exit_code")
                          if kk in v} for k, v in out.items() if isinstance(v, dict)}))
    bad = (out.get("load", {}).get("failed_after_retry", 0) or out.get("kill", {}).get("failed_after_retry", 0)
           or out.get("fuzz", {}).get("exit_code", 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
