"""Serving benchmark: guardray on Ray Serve vs a naive FastAPI + transformers pipeline, in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_bench.py                      # model minilm, writes
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_bench.py --model runs/default/classifier --requests 300
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_bench.py --only options       # speed options only

HTTP part: each system serves the same checkpoint folder on 127.0.0.1; an httpx async load generator sends
single-text POST /v1/classify requests, `concurrency` at a time, a bounded number per cell (after a short
warm-up), for concurrency 1, 8, 32 and two text sets: short (<= 32 tokens, XSTest prompts) and
OpenAI-moderation-length (the OpenAI moderation evaluation texts). It reports p50/p95/p99 latency and
throughput. Systems (one at a time, the other stopped):
  guardray  GuardrailDeployment, 1 replica, @serve.batch (max 32 texts, 5 ms wait), windows of 256 tokens,
            torch threads = --threads; also `guardray-int8` (quantize=int8) unless --no-int8; its forward passes
            run at ServeConfig.precision=auto (bf16 autocast on a CPU with native bf16; add
            `--variant fp32:precision=fp32` for the fp32 row)
  naive     a plain FastAPI app under uvicorn, transformers pipeline("text-classification"), one request at a
            time (the pipeline runs on the event loop), truncation at 256 tokens, same torch threads; its head
            reads BERT's [CLS] pooler, so on a `pooling=mean` checkpoint (the demo's since the LP-FT recipe) its
            scores are not the guard's: a speed peer only (same encoder, same FLOPs)
  --variant NAME:key=value,...  another guardray system with ServeConfig overrides (e.g. single:topology=single,
            int8:quantize=int8); one with ingress=haproxy runs as `guardray serve` in its own process with its own
            local Ray (HAProxy is set where Serve starts), its stats/metrics ports moved to free ones
  infinity-emb  (with --infinity PATH) the infinity-emb server (a dynamic-batching embedding/classification
            server, PyPI infinity-emb 0.0.78), torch engine on CPU, batch size 32, same torch threads, POST
            /classify. It needs transformers < 5 (0.0.78 calls `batch_encode_plus`, gone in transformers 5), so it
            lives in its own venv:
                python3 -m venv /tmp/infvenv && /tmp/infvenv/bin/pip install 'infinity-emb[server,torch]==0.0.78' \
                    'transformers>=4.45,<5'
                ... serve_bench.py --infinity /tmp/infvenv/bin/infinity_emb
            Its scores come from its own head activation (a softmax over the labels), so only its speed is compared.
Speed-options part (no HTTP): GuardClassifier scoring of the OpenAI-moderation and XSTest sets with fp32,
bf16 autocast, dynamic int8, torch.compile and thread counts: texts/s and the quality delta against fp32 (F1 at the
checkpoint's threshold, AUPRC, label agreement, max |score difference|).
Results: a markdown table on stdout and in --out (benchmarks/serve.md keeps a copy with the machine noted).
Evaluation data: ../shared/data/{openai-moderation,xstest}/eval.jsonl (read only, never trained on).
"""
import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray starts its workers (the Serve replicas) at nice 15; the load generator and the naive server run at nice 0 on
# the same cores, which would starve the replicas on a 2-core machine: every system runs at nice 0 here
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MAX_LENGTH = 256


# ---------------------------------------------------------------- the naive baseline server

def run_naive_server(model: str, port: int, threads: int) -> None:
    """A plain FastAPI app: transformers pipeline, one request at a time, truncation (no windows)."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline
    torch.set_num_threads(threads)
    pipe = pipeline("text-classification", model=model, top_k=None, function_to_apply="sigmoid", device=-1)
    app = FastAPI()

    @app.post("/v1/classify")
    async def classify(body: dict):  # sync work inside async def: requests are served one at a time
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        out = pipe(texts, truncation=True, max_length=MAX_LENGTH)
        return {"results": [{"unsafe_score": next(s["score"] for s in o if s["label"] == "unsafe")} for o in out]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- load generator

def server_timing(header: str) -> dict[str, float]:
    """`app;dur=1.2, model;dur=0.9, batch;desc="4"` -> {"app": 1.2, "model": 0.9, "batch": 4.0}."""
    out = {}
    for part in filter(None, (x.strip() for x in header.split(","))):
        name, *params = [y.strip() for y in part.split(";")]
        for prm in params:
            k, _, v = prm.partition("=")
            try:
                out[name] = float(v.strip('"'))
            except ValueError:
                pass
    return out


def guardray_body(text: str) -> dict:
    return {"input": text}


async def load(url: str, texts: list[str], n: int, concurrency: int, headers=None, path: str = "/v1/classify",
               body=guardray_body) -> dict:
    """Latency percentiles and throughput; for a server that sends Server-Timing (guardray), also the medians of
    its parts: app (the HTTP app in the replica), model (the model call), forward (tokenising + forward pass) and
    the forward batch's size, so client - app = the Serve proxy and HTTP."""
    import httpx
    lat: list[float] = []
    parts: dict[str, list[float]] = {}
    errors = 0
    queue = iter(range(n))

    async def worker(c):
        nonlocal errors
        for i in queue:
            t0 = time.perf_counter()
            try:
                r = await c.post(path, json=body(texts[i % len(texts)]))
                errors += r.status_code != 200
                for k, v in server_timing(r.headers.get("server-timing", "")).items():
                    parts.setdefault(k, []).append(v)
            except httpx.HTTPError:
                errors += 1
            lat.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        warm = iter(range(min(8, n)))
        for _ in warm:
            await c.post(path, json=body(texts[0]))
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(c) for _ in range(concurrency)])
        secs = time.perf_counter() - t0
    q = np.percentile(np.array(lat) * 1000, [50, 95, 99])
    return {"n": n, "c": concurrency, "p50": q[0], "p95": q[1], "p99": q[2], "rps": n / secs, "errors": errors,
            **{f"{k}_p50": float(np.median(v)) for k, v in parts.items()}}


def wait_healthy(url: str, seconds: float = 300, path: str = "/healthz", proc=None) -> None:
    import httpx
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode} before it was healthy")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up in {seconds:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_variant(spec: str) -> tuple[str, dict]:
    """NAME:key=value,key=value (ServeConfig fields) -> (NAME, overrides); e.g. single:topology=single."""
    import yaml
    name, sep, rest = spec.partition(":")
    if not sep or not name.replace("-", "").isalnum():
        sys.exit(f"serve_bench: --variant {spec!r}: expected NAME:key=value[,key=value], e.g. single:topology=single")
    over = {}
    for kv in filter(None, rest.split(",")):
        k, eq, v = kv.partition("=")
        if not eq:
            sys.exit(f"serve_bench: --variant {spec!r}: {kv!r} is not key=value")
        over[k.strip()] = yaml.safe_load(v)
    return name, over


def model_floor(model: str, texts: list[str], n: int, threads: int) -> dict:
    """The model alone, in this process: one text per `GuardClassifier.score` call, as a server at concurrency 1
    would run it (no HTTP, no Serve): the floor under every system's concurrency-1 latency."""
    import torch
    from guardray.classifier import GuardClassifier
    torch.set_num_threads(threads)
    clf = GuardClassifier.load(model)
    for t in texts[:8]:
        clf.score([t])
    lat = []
    t_all = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        clf.score([texts[i % len(texts)]], max_tokens=8192)
        lat.append(time.perf_counter() - t0)
    secs = time.perf_counter() - t_all
    q = np.percentile(np.array(lat) * 1000, [50, 95, 99])
    return {"n": n, "c": 1, "p50": q[0], "p95": q[1], "p99": q[2], "rps": n / secs, "errors": 0}


# ---------------------------------------------------------------- data and model

def read_texts(name: str) -> tuple[list[str], list[int]]:
    f = DATA / name / "eval.jsonl"
    if not f.exists():
        sys.exit(f"serve_bench: {f} not found; the benchmark reads ../shared/data (see its README)")
    rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return [r["text"] for r in rows], [int(r["label"] == "unsafe") for r in rows]


def prepare_model(model: str, out: Path) -> str:
    """A guardray-format folder of `model` (16 labelled outputs) that both systems load; a checkpoint as is."""
    from guardray.classifier import load_backbone, read_meta
    from guardray.models import resolve
    path = resolve(model)
    if read_meta(path):
        return path
    m, tok = load_backbone(path)
    m.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "guardray.json").write_text(json.dumps({"threshold": 0.5, "note": f"untrained head on {model}"}))
    return str(out)


# ---------------------------------------------------------------- parts

def http_part(model: str, sets: dict, args) -> list[dict]:
    """All systems up at once, idle while another is measured; cells interleaved so that a change in the
    machine's background load during the run hits every system alike."""
    from ray import serve
    from guardray.core.config import ResourcesConfig, ServeConfig
    from guardray.ray_utils import init_ray
    from guardray.serve import build_app, run_server
    init_ray(num_cpus=8)  # logical: every system holds 1 CPU and sits idle while another is measured
    systems = {}
    res = ResourcesConfig(serve_cpus=1)
    cfg = ServeConfig(model=model, port=free_port(), threads=args.threads, api_key_env="")
    systems["guardray"] = run_server(cfg, blocking=False, resources=res)
    variants = ([] if args.no_int8 else [("guardray-int8", {"quantize": "int8"})]) + [
        parse_variant(v) for v in args.variant]
    own = [(n, o) for n, o in variants if o.get("ingress") == "haproxy"]
    for name, over in variants:  # more guardray apps on the same Serve instance, each on its own route
        if (name, over) in own:
            continue
        app = build_app({"model": model, "threads": args.threads, "api_key_env": "", **over,
                         "resources": {"serve_cpus": 1}})
        serve.run(app, name=name, route_prefix=f"/{name}")
        systems[name] = systems["guardray"] + f"/{name}"
    peers = []  # (process, name, url, request path, body)
    if args.infinity:  # infinity-emb (a dynamic-batching classification server) in its own venv, same threads
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}  # no telemetry calls (offline)
        proc = subprocess.Popen([args.infinity, "v2", "--model-id", model, "--served-model-name", "guard",
                                 "--port", str(port), "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu",
                                 "--batch-size", "32", "--no-bettertransformer", "--url-prefix", ""], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL)
        peers.append((proc, "infinity-emb", f"http://127.0.0.1:{port}", "/classify",
                      lambda t: {"model": "guard", "input": [t]}))
    for name, over in own:  # HAProxy is a Serve-instance setting: `guardray serve` with its own local Ray
        port = free_port()
        env = {**os.environ, "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
               "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-m", "guardray.cli", "serve", "--model", model, "--port", str(port),
                                 f"serve.threads={args.threads}", "serve.api_key_env=", "resources.serve_cpus=1",
                                 *(f"serve.{k}={v}" for k, v in over.items())], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, start_new_session=True)
        peers.append((proc, name, f"http://127.0.0.1:{port}", "/v1/classify", guardray_body))
    port = free_port()
    naive = subprocess.Popen([sys.executable, __file__, "--naive-server", model, "--port", str(port),
                              "--threads", str(args.threads)], cwd=ROOT)
    rows = []
    try:
        systems["naive"] = f"http://127.0.0.1:{port}"
        wait_healthy(systems["naive"])
        requests_of = {}
        for proc, name, url, path, body in peers:
            wait_healthy(url, seconds=600, path="/healthz" if path == "/v1/classify" else "/health", proc=proc)
            systems[name], requests_of[name] = url, (path, body)
        if args.settle:  # a freshly started Ray cluster (and each `guardray serve` subprocess's own) is busy for a
            print(f"all systems up; {args.settle:.0f} s for the machine to settle", flush=True)  # while
            time.sleep(args.settle)
        for set_name, texts in sets.items():
            r = model_floor(model, texts, max(20, args.requests // 3), args.threads)
            rows.append({"system": "model alone (no server)", "texts": set_name, **r})
            print(f"model alone    {set_name:10s} c=1   p50={r['p50']:7.1f} ms p95={r['p95']:7.1f}", flush=True)
            for c in (1, 8, 32):
                n = args.requests if c > 1 else max(20, args.requests // 3)
                for system, url in systems.items():
                    path, body = requests_of.get(system, ("/v1/classify", guardray_body))
                    r = asyncio.run(load(url, texts, n, c, path=path, body=body))
                    rows.append({"system": system, "texts": set_name, **r})
                    split = (f" [app {r['app_p50']:.1f}, model {r.get('model_p50', 0):.1f}, forward "
                             f"{r.get('forward_p50', 0):.1f} ms, batch {r.get('batch_p50', 0):.0f}]"
                             if "app_p50" in r else "")
                    print(f"{system:14s} {set_name:10s} c={c:<3d} n={n:<4d} p50={r['p50']:7.1f} ms "
                          f"p95={r['p95']:7.1f} p99={r['p99']:7.1f} {r['rps']:6.1f} req/s errors={r['errors']} "
                          f"(load avg {os.getloadavg()[0]:.1f}){split}", flush=True)
    finally:
        for proc in [naive, *(p[0] for p in peers)]:
            proc.send_signal(signal.SIGINT)  # `guardray serve` shuts Serve, HAProxy and its Ray down on Ctrl-C
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        serve.shutdown()
    return rows


def options_part(model: str, args) -> list[dict]:
    import torch
    from sklearn.metrics import average_precision_score, f1_score
    from guardray.core.config import ServeConfig
    from guardray.serve import load_classifier
    sets = {name: read_texts(name) for name in ("openai-moderation", "xstest")}
    if args.limit:  # the first N texts of each set (the files are not sorted by label or length)
        sets = {k: (t[:args.limit], y[:args.limit]) for k, (t, y) in sets.items()}
    fp32 = dict(precision="fp32")
    variants = [("fp32, 1 thread", dict(threads=1, **fp32)), ("fp32", fp32),
                ("bf16 autocast (needs native bf16)", dict(precision="bf16")),
                ("int8 (dynamic, Linear)", dict(quantize="int8")),
                ("int8, 256 tokens per text", dict(quantize="int8", max_length=256)),
                ("torch.compile", dict(compile=True, **fp32))]
    rows, base = [], {}
    for name, kw in variants:
        threads = kw.pop("threads", args.threads)
        torch.set_num_threads(threads)
        t_load = time.perf_counter()
        clf = load_classifier(model, ServeConfig(model=model, window_stride=64, **kw))
        t_load = time.perf_counter() - t_load
        row = {"variant": name, "threads": threads, "load_s": t_load}
        for set_name, (texts, labels) in sets.items():
            if name == "torch.compile":  # compile work for new shapes: one untimed pass first
                clf.score(texts[:256], batch_size=32, max_tokens=8192)
            t0 = time.perf_counter()
            s = clf.score(texts, batch_size=32, max_tokens=8192)
            secs = time.perf_counter() - t0
            pred = (s.unsafe >= clf.threshold).astype(int)
            f1 = f1_score(labels, pred, zero_division=0)
            auprc = average_precision_score(labels, s.unsafe)
            if not base.get(set_name):
                base[set_name] = (s.unsafe, pred, f1, auprc)
            b = base[set_name]
            row[set_name] = {"texts_per_s": len(texts) / secs, "f1": f1, "auprc": auprc, "d_f1": f1 - b[2],
                             "d_auprc": auprc - b[3], "agree": float((pred == b[1]).mean()),
                             "max_abs_d": float(np.abs(s.unsafe - b[0]).max())}
        rows.append(row)
        print(name, json.dumps(row, default=float), flush=True)
    torch.set_num_threads(args.threads)
    return rows


def render(http_rows, opt_rows, meta) -> str:
    out = [f"Machine: {meta['machine']}. Model: {meta['model']}. Date: {meta['date']}.", ""]
    out += [f"- {line}" for line in meta.get("sets", [])] + [""]
    if http_rows:
        out += ["| system | texts | concurrency | requests | p50 ms | p95 ms | p99 ms | req/s | errors | "
                "p50 ms in the app / model call / forward (batch) |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in http_rows:
            split = (f"{r['app_p50']:.1f} / {r.get('model_p50', 0):.1f} / {r.get('forward_p50', 0):.1f} "
                     f"({r.get('batch_p50', 0):.0f})" if "app_p50" in r else "")
            out.append(f"| {r['system']} | {r['texts']} | {r['c']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | "
                       f"{r['p99']:.1f} | {r['rps']:.1f} | {r['errors']} | {split} |")
        out.append("")
    if opt_rows:
        out += ["| variant | threads | load s | moderation texts/s | XSTest texts/s | moderation F1 (delta) | "
                "moderation AUPRC (delta) | XSTest F1 (delta) | label agreement mod/XS | max abs score diff |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in opt_rows:
            m, x = r["openai-moderation"], r["xstest"]
            out.append(f"| {r['variant']} | {r['threads']} | {r['load_s']:.1f} | {m['texts_per_s']:.1f} | "
                       f"{x['texts_per_s']:.1f} | {m['f1']:.3f} ({m['d_f1']:+.3f}) | {m['auprc']:.3f} "
                       f"({m['d_auprc']:+.3f}) | {x['f1']:.3f} ({x['d_f1']:+.3f}) | {m['agree']:.3f} / "
                       f"{x['agree']:.3f} | {max(m['max_abs_d'], x['max_abs_d']):.4f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="checkpoint folder or registry name")
    ap.add_argument("--requests", type=int, default=200, help="requests per cell at concurrency 8 and 32 "
                                                                 "(a third at concurrency 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every system")
    ap.add_argument("--only", choices=["http", "options"], default=None)
    ap.add_argument("--no-int8", action="store_true", help="skip the guardray-int8 HTTP rows")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="another guardray system with these ServeConfig overrides (repeatable), e.g. "
                         "single:topology=single or nowait:batch_wait_timeout_s=0")
    ap.add_argument("--infinity", metavar="PATH", default="",
                    help="the infinity_emb executable (infinity-emb installed in its own venv, README of "
                         "benchmarks): adds it as a peer on the same checkpoint")
    ap.add_argument("--settle", type=float, default=30, help="seconds to wait once every system is up, before "
                                                                 "the first cell (start-up work of the clusters)")
    ap.add_argument("--limit", type=int, default=0, help="speed options: first N texts of each set (0 = all)")
    ap.add_argument("--out", default="runs/serve_bench.md")
    ap.add_argument("--naive-server", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.naive_server:
        run_naive_server(args.naive_server, args.port, args.threads)
        return 0

    from transformers import AutoTokenizer
    work = Path(args.out).parent / "serve_bench_model"
    work.mkdir(parents=True, exist_ok=True)
    model = prepare_model(args.model, work)
    tok = AutoTokenizer.from_pretrained(model)
    xs, _ = read_texts("xstest")
    short = [t for t in xs if len(tok(t)["input_ids"]) <= 32]
    mod, _ = read_texts("openai-moderation")
    sets = {"short": short, "moderation": mod}
    set_lines = []
    for k, v in sets.items():
        n_tok = [len(tok(t)["input_ids"]) for t in v]
        set_lines.append(f"{k}: {len(v)} texts, tokens mean {np.mean(n_tok):.0f}, p50 {np.median(n_tok):.0f}, "
                         f"max {max(n_tok)}")
        print(set_lines[-1], flush=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
                       f"{os.getloadavg()[0]:.1f} at start", "model": f"{args.model} ({model})",
            "date": time.strftime("%Y-%m-%d %H:%M"), "sets": set_lines}
    http_rows = http_part(model, sets, args) if args.only in (None, "http") else []
    opt_rows = options_part(model, args) if args.only in (None, "options") else []
    meta["machine"] += f", {os.getloadavg()[0]:.1f} at the end"
    md = render(http_rows, opt_rows, meta)
    Path(args.out).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
