"""Serving: a real Ray Serve app on 127.0.0.1 with real HTTP (httpx, the openai client, schemathesis).

One module-scoped app serves three hand-made checkpoints side by side (multiplexing): `default` (a tiny encoder
whose head always says safe), `round1` (always unsafe, S1, threshold 0.7) and `marker` (a tiny GPT-2 whose
unsafe score depends only on its last token being the marker token; with a 32-token window it shows windowing).
An API key is on, so every request but /healthz and the schema needs the bearer token.
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from guardray.core.config import ConfigError, ServeConfig

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-" + "0123456789abcdef"
KEY_ENV = "GUARDRAY_TEST_SERVE_KEY"
PREFIX = "the quick brown fox jumps over the lazy dog. " * 30  # ~800 tokens of benign text
MARKER = " detonate"
MAX_TEXTS, MAX_CHARS = 8, 4000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(model, tok, folder: Path, meta: dict) -> str:
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    (folder / "guardray.json").write_text(json.dumps(meta))
    return str(folder)


def _constant_encoder(folder: Path, unsafe: bool, threshold: float) -> str:
    """tiny-encoder whose head ignores its input: unsafe (and S1) ~0.998, or everything ~0.002."""
    import torch
    from guardray.classifier import load_backbone
    from guardray.models import resolve
    model, tok = load_backbone(resolve("tiny-encoder"))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-6.0)
        if unsafe:
            model.classifier.bias[0] = 6.0
            model.classifier.bias[1] = 6.0
    return _save(model, tok, folder, {"threshold": threshold})


def _marker_lm(folder: Path) -> tuple[str, int]:
    """tiny GPT-2 classifier that scores only its last token: unsafe ~1 when it is the marker's last token.

    Attention and MLP outputs are zeroed and positions carry nothing, so the final hidden state at the last
    token is LayerNorm(embedding of that token); every token embeds to pattern u, the marker to v (u, v orthogonal
    +-1 patterns with zero mean), and the unsafe row of the head is 10 (v - u) / 64: logit +10 vs -10."""
    import torch
    from guardray.classifier import load_backbone
    from guardray.models import resolve
    model, tok = load_backbone(resolve("tiny-causal-lm"))
    marker_id = tok(MARKER)["input_ids"][-1]
    d = model.config.n_embd
    u = torch.tensor([1.0, -1.0] * (d // 2))
    v = torch.tensor([1.0] * (d // 2) + [-1.0] * (d // 2))
    assert float(u @ v) == 0.0
    with torch.no_grad():
        for block in model.transformer.h:
            for lin in (block.attn.c_proj, block.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
        model.transformer.wpe.weight.zero_()
        model.transformer.wte.weight[:] = u
        model.transformer.wte.weight[marker_id] = v
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.bias.zero_()
        w = 10 * (v - u) / d
        model.score.weight[:] = -10 * (u + v) / d
        model.score.weight[0] = w
        model.score.weight[1] = w
    return _save(model, tok, folder, {"threshold": 0.5, "max_length": 32}), marker_id


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_ckpts")
    for name in ("lo", "hi", "marker", "broken"):
        (root / name).mkdir()
    marker, marker_id = _marker_lm(root / "marker")
    (root / "broken" / "config.json").write_text("{}")  # resolves as a folder, fails to load in the replica
    return {"lo": _constant_encoder(root / "lo", False, 0.5), "hi": _constant_encoder(root / "hi", True, 0.7),
            "marker": marker, "marker_id": marker_id, "broken": str(root / "broken")}


@pytest.fixture(scope="module")
def server(ray_session, ckpts):
    """The app, started through guardray.serve.run_server (the function behind `guardray serve`)."""
    from ray import serve
    from guardray.serve import run_server
    models = {"round1": ckpts["hi"], "marker": ckpts["marker"], "solo": ckpts["lo"], "broken": ckpts["broken"]}
    cfg = ServeConfig(model=ckpts["lo"], models=models,
                      host="127.0.0.1", port=_free_port(), api_key_env=KEY_ENV, max_texts=MAX_TEXTS,
                      max_chars=MAX_CHARS, max_batch_size=8, batch_wait_timeout_s=0.05)
    os.environ[KEY_ENV] = KEY  # read by build_app in this process; only its hash goes to the replica
    try:
        url = run_server(cfg, blocking=False)
    finally:
        del os.environ[KEY_ENV]
    assert url.startswith("http://127.0.0.1:")
    yield url
    serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


# ---------------------------------------------------------------- endpoints

def test_classify_one_text_and_a_list(client):
    r = client.post("/v1/classify", json={"input": "How do I kill a Python process?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "default" and len(body["results"]) == 1
    res = body["results"][0]
    assert res["label"] == "safe" and res["unsafe_score"] < 0.01 and res["threshold"] == 0.5
    assert res["model"] == "default" and len(res["category_scores"]) == 15 and "jailbreak" in res["category_scores"]

    r = client.post("/v1/classify", json={"input": ["one", "two", "three"], "model": "round1"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    for res in results:  # round1 always says unsafe, S1, with its own threshold
        assert res["label"] == "unsafe" and res["unsafe_score"] > 0.99 and res["threshold"] == 0.7
        assert res["category_scores"]["S1"] > 0.99 and res["category_scores"]["S2"] < 0.01
        assert res["model"] == "round1"
    # where the time went (Server-Timing): the app holds the model call, which holds the forward pass; the three
    # texts rode in forward batches of at least one text
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve_bench import server_timing
    t = server_timing(r.headers["server-timing"])
    assert set(t) == {"app", "model", "forward", "batch"}, r.headers["server-timing"]
    assert t["app"] >= t["model"] >= t["forward"] > 0 and t["batch"] >= 1


def test_chat_messages_classify_the_last_user_turn_in_its_context(client):
    # the marker model flags a text whose LAST token is the marker: the conversation is read as one transcript
    # ending with the last user turn, so an earlier turn cannot hide it and a later turn decides
    convo = [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    r = client.post("/v1/classify", json={"model": "marker",
                                          "messages": convo + [{"role": "user", "content": "please" + MARKER}]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["label"] == "unsafe"
    r = client.post("/v1/classify", json={"model": "marker", "messages": [
        {"role": "user", "content": "please" + MARKER}, {"role": "assistant", "content": "No."},
        {"role": "user", "content": "ok, what is the weather like"}], "target": "prompt"})
    assert r.status_code == 200 and r.json()["results"][0]["label"] == "safe", r.text
    # target "response": the reply is classified, read after the role marker and the prompt it answers
    for reply, label in (("Sure." + MARKER, "unsafe"), ("No, I won't.", "safe")):
        r = client.post("/v1/classify", json={"model": "marker", "target": "response", "messages": [
            {"role": "user", "content": "please" + MARKER}, {"role": "assistant", "content": reply}]})
        assert r.status_code == 200 and r.json()["results"][0]["label"] == label, r.text
    from guardray.core.operators import render_chat
    assert render_chat([("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c")]) == \
        "User: a\nAssistant: b\nUser: c"


@pytest.mark.parametrize("body, needle", [
    ({"messages": []}, "messages: the list is empty"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role: unknown role 'wizard'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "the last turn must be the user message to classify (role 'user'); got role 'assistant' (send target "
     "'response'"),
    ({"messages": [{"role": "user"}]}, "messages[0].content: required field is missing"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content: the content is empty"),
    ({"messages": "hello"}, "messages"),
    ({"input": "a", "messages": [{"role": "user", "content": "b"}]}, "not both"),
    ({"messages": [{"role": "user", "content": "b"}], "target": "response"},
     "target 'response' classifies the last turn, which must be the assistant's reply"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}], "target": "response"},
     "the assistant reply needs the user prompt it answers"),
    ({"input": "a reply", "target": "response"}, 'target "response": send "messages"'),
    ({"messages": [{"role": "user", "content": "b"}], "target": "answer"}, "target"),
])
def test_bad_chat_messages_get_a_4xx_that_names_the_problem(client, body, needle):
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"], r.json()


def test_multiplexing_by_field_and_header(client):
    def label(model=None, header=None):
        r = client.post("/v1/classify", json={"input": "x", **({"model": model} if model else {})},
                        headers={"serve_multiplexed_model_id": header} if header else {})
        return r.status_code, r.json()

    assert label()[1]["results"][0]["label"] == "safe"
    assert label(header="round1")[1]["results"][0]["label"] == "unsafe"
    assert label(model="round1")[1]["results"][0]["label"] == "unsafe"
    assert label(model="default")[1]["results"][0]["label"] == "safe"
    status, body = label(model="round1", header="default")
    assert status == 400 and "serve_multiplexed_model_id" in body["error"]["message"]
    status, body = label(model="round9")
    assert status == 404 and "round9" in body["error"]["message"] and "round1" in body["error"]["message"]
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["default", "round1", "marker", "solo", "broken"]
    status, body = label(model="broken")  # the server's fault, said so; the other models keep answering
    assert status == 503 and "model 'broken' failed to load" in body["error"]["message"]
    assert label(model="round1")[1]["results"][0]["label"] == "unsafe"


def test_concurrent_requests_are_batched_per_model(server):
    """Concurrent requests for different models share @serve.batch batches; each gets its own model's answer."""
    async def go():
        async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"},
                                     timeout=120) as c:
            reqs = [c.post("/v1/classify", json={"input": [f"text {i}", f"more {i}"],
                                                 "model": "round1" if i % 2 else "default"}) for i in range(24)]
            # single-text requests to a model no other test uses: its batch sizes show merging (metrics test)
            solo = [c.post("/v1/classify", json={"input": f"solo {i}", "model": "solo"}) for i in range(16)]
            return await asyncio.gather(*reqs), await asyncio.gather(*solo)
    responses, solo = asyncio.run(go())
    assert all(r.status_code == 200 and r.json()["results"][0]["label"] == "safe" for r in solo)
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        labels = {x["label"] for x in r.json()["results"]}
        assert labels == {"unsafe" if i % 2 else "safe"}, (i, r.text)


def test_metrics_show_batches_merged_across_requests(server, ray_session):
    """Ray's Prometheus endpoint carries Serve's request counter and our batch-size histogram; a forward batch of
    more than one text for model `solo` can only come from @serve.batch merging the concurrent single-text
    requests above."""
    port = next(n["MetricsExportPort"] for n in ray_session.nodes() if n["Alive"])

    def series(name):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return [ln for ln in text.splitlines() if ln.startswith(name)]

    deadline = time.time() + 60  # metrics are exported every few seconds
    while time.time() < deadline:
        solo = [ln for ln in series("ray_guardray_batch_texts") if 'model="solo"' in ln]
        batches = sum(float(ln.rsplit(" ", 1)[1]) for ln in solo if ln.startswith("ray_guardray_batch_texts_count"))
        single = sum(float(ln.rsplit(" ", 1)[1]) for ln in solo
                     if ln.startswith("ray_guardray_batch_texts_bucket") and 'le="1.0"' in ln)
        if batches and single < batches and series("ray_serve_num_http_requests_total"):
            break
        time.sleep(3)
    assert batches > 0 and single < batches, (batches, single)  # some forward batch held several requests
    assert any('route="/v1/classify"' in ln for ln in series("ray_serve_num_http_requests_total"))
    assert series("ray_guardray_texts_total")
    # the score histogram a deployment watches for drift: every classified text lands in one bucket
    scores = [ln for ln in series("ray_guardray_unsafe_score_count") if 'model="solo"' in ln]
    assert scores and sum(float(ln.rsplit(" ", 1)[1]) for ln in scores) >= 1
    assert any('le="0.999"' in ln for ln in series("ray_guardray_unsafe_score_bucket"))


def test_a_killed_model_replica_costs_no_failed_request(server, ray_session, ckpts):
    """A second app with 2 model replicas; one is killed (no restart) while 48 concurrent requests are in flight.
    The ingress re-sends the calls lost with it to the surviving replica: every request answers 200."""
    from ray import serve
    from guardray.serve import build_app
    serve.run(build_app({"model": ckpts["hi"], "num_replicas": 2, "api_key_env": "", "batch_wait_timeout_s": 0.05}),
              name="kill", route_prefix="/kill", blocking=False)
    deadline = time.time() + 180
    while time.time() < deadline:
        names = sorted(a["name"] for a in ray_session.util.list_named_actors(all_namespaces=True)
                       if a["namespace"] == "serve" and "GuardrailModel" in a["name"] and "kill" in a["name"])
        if len(names) == 2 and httpx.post(server + "/kill/v1/classify", json={"input": "x"},
                                          timeout=60).status_code == 200:
            break
        time.sleep(1)
    assert len(names) == 2, names

    async def go():
        async with httpx.AsyncClient(base_url=server + "/kill", timeout=120) as c:
            reqs = [asyncio.ensure_future(c.post("/v1/classify", json={"input": [f"text {i}"] * 4}))
                    for i in range(48)]
            await asyncio.sleep(0.05)  # calls are on both replicas now
            ray_session.kill(ray_session.get_actor(names[0], namespace="serve"), no_restart=True)
            return await asyncio.gather(*reqs)
    try:
        responses = asyncio.run(go())
        bad = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
        assert not bad, bad
        assert all(r.json()["results"][0]["label"] == "unsafe" for r in responses)
    finally:
        serve.delete("kill")


def test_adaptive_batcher_runs_a_lone_item_at_once_and_batches_what_arrives_meanwhile():
    from guardray.serve import AdaptiveBatcher
    seen = []

    async def run(items):
        seen.append(list(items))
        await asyncio.sleep(0.05)  # a forward pass
        if "boom" in items:
            raise ValueError("bad batch")
        return [x.upper() for x in items]

    async def go():
        b = AdaptiveBatcher(run, max_batch_size=4)
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.01)  # "a" runs alone; these six arrive while it runs
        rest = [asyncio.ensure_future(b.submit(x)) for x in "bcdefg"]
        out = await asyncio.gather(first, *rest)
        bad = asyncio.ensure_future(b.submit("boom"))
        await asyncio.sleep(0.01)
        ok = asyncio.ensure_future(b.submit("h"))  # arrives during the failing batch: the next batch, unharmed
        res = await asyncio.gather(bad, ok, return_exceptions=True)
        return out, res
    out, res = asyncio.run(go())
    assert out == list("ABCDEFG")
    assert seen[:3] == [["a"], ["b", "c", "d", "e"], ["f", "g"]]  # no wait for a lone item; max_batch_size holds
    assert isinstance(res[0], ValueError) and res[1] == "H"


def test_single_topology_answers_like_split(server, ckpts):
    """topology=single: one deployment is ingress and model (no GuardrailModel), same answers, same 4xx; here with
    the adaptive batcher, which still shares forward passes between concurrent requests."""
    from ray import serve
    from guardray.serve import build_app
    serve.run(build_app({"model": ckpts["hi"], "models": {"marker": ckpts["marker"]}, "topology": "single",
                         "batcher": "adaptive", "api_key_env": ""}),
              name="single", route_prefix="/single", blocking=False)
    try:
        deployments = serve.status().applications["single"].deployments
        assert set(deployments) == {"GuardrailServer"}, deployments
        r = httpx.post(server + "/single/v1/classify", json={"input": ["hello", "x"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert [x["label"] for x in r.json()["results"]] == ["unsafe", "unsafe"]
        m = httpx.post(server + "/single/v1/classify", timeout=60,
                       json={"input": ["please" + MARKER, "please"], "model": "marker"})
        assert m.status_code == 200, m.text
        assert [x["label"] for x in m.json()["results"]] == ["unsafe", "safe"], m.text
        bad = httpx.post(server + "/single/v1/classify", json={"input": "x", "model": "nope"}, timeout=60)
        assert bad.status_code == 404 and "not served" in bad.json()["error"]["message"]
        mod = httpx.post(server + "/single/v1/moderations", json={"input": "x"}, timeout=60)
        assert mod.status_code == 200 and mod.json()["results"][0]["flagged"] is True

        async def go():
            async with httpx.AsyncClient(base_url=server + "/single", timeout=120) as c:
                return await asyncio.gather(*[c.post("/v1/classify", json={"input": f"t {i}"}) for i in range(24)])
        assert all(r.status_code == 200 for r in asyncio.run(go()))
    finally:
        serve.delete("single")


def test_long_input_is_windowed_so_the_end_is_seen(client, ckpts):
    """Harmful content after a long benign prefix: one truncated window misses it, the windows catch it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(ckpts["marker"])
    n_tokens = len(tok(PREFIX + MARKER)["input_ids"])
    assert n_tokens > 20 * 32 and ckpts["marker_id"] not in tok(PREFIX)["input_ids"]
    model = AutoModelForSequenceClassification.from_pretrained(ckpts["marker"]).eval()
    with torch.no_grad():  # what plain truncation to the 32-token window would say
        first_window = tok(PREFIX + MARKER, truncation=True, max_length=32, return_tensors="pt")
        assert torch.sigmoid(model(**first_window).logits[0, 0]) < 0.01

    r = client.post("/v1/classify", json={"input": [PREFIX + MARKER, PREFIX, MARKER.strip() + " it"],
                                          "model": "marker"})
    assert r.status_code == 200, r.text
    long_unsafe, long_safe, short = r.json()["results"]
    assert long_unsafe["label"] == "unsafe" and long_unsafe["unsafe_score"] > 0.99
    assert long_safe["label"] == "safe" and long_safe["unsafe_score"] < 0.01
    assert short["label"] == "safe"  # the model reads the last token only; "detonate it" ends on "it"
    r = client.post("/v1/moderations", json={"input": PREFIX + MARKER, "model": "marker"})
    assert r.json()["results"][0]["flagged"] is True


def test_moderations_with_the_openai_client(server):
    import openai
    oai = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)
    m = oai.moderations.create(input=["I will hurt them", "hello there"], model="round1")
    assert m.model == "round1" and len(m.results) == 2
    r = m.results[0]
    assert r.flagged is True
    # S1 (violent crimes) maps to violence, illicit/violent and harassment/threatening
    assert r.categories.violence and r.categories.illicit_violent and r.categories.harassment_threatening
    assert not r.categories.sexual and not r.categories.self_harm
    assert r.category_scores.violence > 0.99 and r.category_scores.sexual < 0.01

    m = oai.moderations.create(input="hello there", model="omni-moderation-latest")  # OpenAI name -> default
    assert m.model == "default" and m.results[0].flagged is False
    assert not any(m.results[0].categories.model_dump().values())
    # a benign text's category scores are P(unsafe and category): never above its unsafe score, whatever the
    # category head says given unsafe
    c = httpx.post(server + "/v1/classify", json={"input": "hello there"}, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=60).json()["results"][0]
    assert max(m.results[0].category_scores.model_dump().values()) <= c["unsafe_score"] + 1e-6
    m = oai.moderations.create(input=[{"type": "text", "text": "hello"}])
    assert m.results[0].flagged is False

    with pytest.raises(openai.UnprocessableEntityError, match="empty"):
        oai.moderations.create(input=[])
    with pytest.raises(openai.AuthenticationError, match="API key"):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).moderations.create(input="x")


def test_healthz_schema_and_auth(server, client):
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}  # no key needed
    schema = httpx.get(server + "/openapi.json").json()
    assert {"/v1/classify", "/v1/moderations", "/healthz"} <= set(schema["paths"])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(server + "/v1/classify", json={"input": "x"}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in r.json()["error"]["message"]
    r = httpx.post(server + "/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401  # the key is checked before the body is read


@pytest.mark.parametrize("body, status, needle", [
    ({"input": ["x"] * (MAX_TEXTS + 1)}, 413, f"max_texts={MAX_TEXTS}"),
    ({"input": ["ok", "y" * (MAX_CHARS + 1)]}, 413, f"input[1]: {MAX_CHARS + 1} characters; the limit is max_chars"),
    ({"input": []}, 422, "input: the list is empty"),
    ({"input": ""}, 422, "input: the text is empty"),
    ({"input": ["a", ""]}, 422, "input[1]: the text is empty"),
    ({"input": 5}, 422, "input: must be a string or a list of strings (got a number)"),
    ({"input": ["a", None]}, 422, "item 1 is null"),
    ({"input": {"text": "a"}}, 422, "input: must be a string or a list of strings"),
    ({"text": "a"}, 422, "text: unknown field"),
    ({}, 422, "input: required field is missing"),
    ({"input": "a", "model": 3}, 422, "model"),
    (b"{not json", 422, "request body is not valid JSON"),
    (b'["a", "b"]', 422, "request body must be a JSON object"),
    (b"", 422, "request body is missing"),
    (b'{"input": "\\ud800 lone surrogate"}', 422, "not valid Unicode"),
])
def test_client_mistakes_get_a_clear_4xx(client, body, status, needle):
    for path in ("/v1/classify", "/v1/moderations"):
        if path == "/v1/moderations" and body in ({"text": "a"}, {"input": {"text": "a"}}):
            continue  # moderations ignores unknown fields (OpenAI compatibility) and takes {"type","text"} items
        if isinstance(body, bytes):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        assert r.status_code == status, (path, r.text)
        err = r.json()["error"]
        assert needle in err["message"], (path, err)
        assert err["type"] and err["code"]


def test_other_http_mistakes_are_4xx(client):
    assert client.get("/v1/classify").status_code == 405
    assert client.get("/v1/nothing").status_code == 404
    r = client.post("/v1/classify", content=b"input=hello", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]["message"]


def test_schemathesis_fuzz_finds_no_server_error(server):
    """A short property-based run against the OpenAPI schema: 0 server errors (the long run is in
    scripts/serve_reliability.py)."""
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "run", server + "/openapi.json", "--checks", "not_a_server_error", "--max-examples", "15",
           "--seed", "7", "-H", f"Authorization: Bearer {KEY}", "--no-shrink",
           "--phases", "examples,coverage,fuzzing", "--request-timeout", "60"]
    # one worker: with 4 threads, hypothesis' lambda descriptions race in CPython 3.11's ast.parse ("SystemError: AST
    # constructor recursion depth mismatch" while generating examples, 1 of 3 full runs on 2026-12-06), a runtime
    # error of the fuzzer, not of the server
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


# ---------------------------------------------------------------- config, build, speed options (no server)

def test_build_app_validates_args():
    from guardray.models import ModelNotFound
    from guardray.serve import build_app
    with pytest.raises(ConfigError, match="serve.max_batch_siz: unknown key; did you mean 'max_batch_size'"):
        build_app({"model": "tiny-encoder", "max_batch_siz": 4})
    with pytest.raises(ConfigError, match="serve.threshold: 1.5 is out of range"):
        build_app({"model": "tiny-encoder", "threshold": 1.5})
    with pytest.raises(ConfigError, match="serve.model: no checkpoint given"):
        build_app({})
    with pytest.raises(ConfigError, match="serve.models: bad model id 'default'"):
        build_app({"model": "tiny-encoder", "models": {"default": "tiny-encoder"}})
    with pytest.raises(ModelNotFound, match="no/such/ckpt"):
        build_app({"model": "no/such/ckpt"})
    with pytest.raises(ConfigError, match="serve.quantize: 'int4' is not one of"):
        build_app({"model": "tiny-encoder", "quantize": "int4"})
    # `serve run guardray.serve:build_app port=8001 threshold=0.4` passes strings
    app = build_app({"model": "tiny-encoder", "port": "8001", "threshold": "0.4", "autoscaling": "true"})
    assert app is not None


def test_serve_yaml_is_a_valid_ray_serve_config():
    from ray.serve.schema import ServeDeploySchema
    from guardray.serve import load_settings
    data = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(data)  # the format `serve run` / `serve deploy` read
    app = next(a for a in data["applications"] if a["import_path"] == "guardray.serve:build_app")
    assert app["route_prefix"] == "/" and data["http_options"]["host"] == "127.0.0.1"
    cfg, res, _ = load_settings(str(ROOT / "configs" / "serve.yaml"), ["port=9001", "resources.serve_cpus=2"])
    assert cfg.port == 9001 and res.serve_cpus == 2 and cfg.model == app["args"]["model"]
    cfg, res, _ = load_settings(str(ROOT / "configs" / "default.yaml"), ["model=tiny-encoder", "quantize=int8"])
    assert cfg.model == "tiny-encoder" and cfg.quantize == "int8" and cfg.host == "127.0.0.1"


def test_int8_quantisation_keeps_scores_close(ckpts):
    import torch
    from guardray.serve import load_classifier
    texts = ["hello there", PREFIX[:300], "how do I kill a python process"]
    fp32 = load_classifier("tiny-encoder", ServeConfig(model="x", precision="fp32"))
    int8 = load_classifier("tiny-encoder", ServeConfig(model="x", quantize="int8"))
    assert not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    a, b = fp32.score(texts), int8.score(texts)
    assert abs(a.unsafe - b.unsafe).max() < 0.05 and abs(a.categories - b.categories).max() < 0.05


def test_serve_max_length_caps_the_tokens_scored_per_text(ckpts):
    from guardray.serve import load_classifier, load_settings
    full = load_classifier("tiny-encoder", ServeConfig(model="x", precision="fp32"))
    short = load_classifier("tiny-encoder", ServeConfig(model="x", max_length=32, precision="fp32"))
    assert short.max_length == 32 and full.max_length > 32
    long_text = PREFIX[:600] + " and now the part at the very end that only the full length still reads in one pass"
    a, b = full.score([long_text, "hi"]), short.score([long_text, "hi"])
    assert a.unsafe[1] == pytest.approx(b.unsafe[1], abs=1e-5)  # a short text is scored the same
    assert abs(a.unsafe[0] - b.unsafe[0]) > 1e-6  # a long one is read in fewer tokens
    with pytest.raises(ConfigError, match="max_length"):
        load_settings(str(ROOT / "configs" / "default.yaml"), ["model=tiny-encoder", "max_length=-1"])


def test_cli_help_names_the_options():
    r = subprocess.run([sys.executable, "-m", "guardray.cli", "serve", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "--model" in r.stdout and "--multiplex" in r.stdout and "--port" in r.stdout


def _ctrl_c(p: subprocess.Popen, timeout: float) -> None:
    """Stop a `guardray serve` subprocess as a user would (SIGINT); kill its process group if it hangs."""
    import signal
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow
def test_guardray_serve_command_end_to_end(tmp_path):
    """`guardray serve --model ... --port P` in its own process (its own local Ray), then Ctrl-C."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen([sys.executable, "-m", "guardray.cli", "serve", "--model", "tiny-encoder", "--port",
                          str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"input": "hi"}, timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["label"] in ("safe", "unsafe")
    finally:
        _ctrl_c(p, 60)


def test_haproxy_ingress_on_a_cluster_started_without_it_is_a_clear_error(ray_session):
    """serve.ingress=haproxy needs RAY_SERVE_ENABLE_HA_PROXY=1 where Ray started; this session's Ray has not."""
    from guardray.serve import run_server
    cfg = ServeConfig(model="tiny-encoder", port=_free_port(), api_key_env="", ingress="haproxy")
    with pytest.raises(ConfigError, match="RAY_SERVE_ENABLE_HA_PROXY=1.*serve.ingress=proxy"):
        run_server(cfg, blocking=False)


def test_guardray_serve_through_haproxy_then_ctrl_c_leaves_no_haproxy(tmp_path):
    """`guardray serve ... serve.ingress=haproxy` in its own process (its own local Ray, HAProxy in front of the
    ingress replica's own HTTP server): answers, gives 4xx for a bad request, and Ctrl-C takes HAProxy down."""
    port, stats, metrics = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics)}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "guardray.cli", "serve", "--model", "tiny-encoder", "--port",
                              str(port), "serve.ingress=haproxy"], cwd=ROOT, env=env, stdout=out,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None and "guardray: serving" not in log.read_text():
            time.sleep(2)
        assert p.poll() is None and "via HAProxy" in log.read_text(), log.read_text()[-3000:]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"input": "hi"}, timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["label"] in ("safe", "unsafe"), r.text
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"input": ""}, timeout=60)
        assert 400 <= bad.status_code < 500 and "input" in bad.text
        page = httpx.get(f"http://127.0.0.1:{stats}/stats", timeout=10)  # HAProxy's own stats page: it fronts us
        assert page.status_code == 200 and "haproxy" in page.text.lower()
    finally:
        _ctrl_c(p, 90)
    with pytest.raises(httpx.HTTPError):  # HAProxy went with the server: nothing listens on its ports any more
        httpx.get(f"http://127.0.0.1:{stats}/stats", timeout=5)
