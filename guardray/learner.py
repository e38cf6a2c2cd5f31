"""PPOLearner: the Ray actor that trains the adversarial generator (the RL "policy") with PPO.

    learner = PPOLearner.options(num_cpus=1).remote(cfg.ppo, cfg.generator, seed=cfg.run.seed)
    stats = ray.get(learner.update.remote(rollouts, reward_batch))     # rollouts: list[Rollout] from replicas
    [ref] = ray.get(learner.weights_ref.remote())                      # ObjectRef of the policy state dict
    ray.get([r.load_weights.remote(ref, stats["version"]) for r in replicas])

What it holds: the policy (a causal LM, full fine-tune or LoRA via peft), a `ValueHead` on the policy's last hidden
state (shared trunk, as in the classic TRL PPO trainer), and a frozen reference policy for the KL penalty (a deep copy
in full mode; the base model with the adapter switched off in LoRA mode, so no second copy). Resources: whatever the
controller gives it (`resources.learner_cpus/gpus`); it uses CUDA when it sees a GPU (fp32 weights; bf16 autocast
where the device computes bf16 natively, `ppo.precision`).

`update(rollouts, rewards)` runs one PPO iteration (maths in `guardray.core.ppo`, tested there):
 1. Staleness. Every rollout carries the policy version that wrote it. The learner recomputes the behaviour
    logprobs itself under its current (pre-update) weights - so the ratio is exact even when a replica runs bf16 or
    vLLM - and uses the generator's logprobs only as a check. A rollout is *stale* when its version differs from the
    learner's, or when the generator's logprobs differ from the recomputed ones by more than `ppo.logprob_tol` per
    token. `ppo.stale_rollouts` decides: "raise" (default, `StaleRolloutError`), "drop" (skip them) or "recompute"
    (use them as if on-policy); the stats always count them (`stale_rollouts`, `dropped_rollouts`).
 2. Per-token rewards: -kl_coef * (logp - ref_logp) on each completion token, the Scorer's reward on the last one;
    GAE advantages (whitened) and returns.
 3. `ppo_epochs` passes over shuffled minibatches: clipped surrogate + vf_coef * clipped value loss, gradient norm
    clipped to `max_grad_norm`, AdamW.
 4. The KL coefficient adapts towards `kl_target` (if > 0); the version goes up by one.

Why not TRL: TRL 1.16 has no PPO trainer any more, and its GRPO/RLOO trainers own the generation loop (they call
the model or their own vLLM themselves); here generation happens in separate GeneratorReplica actors that must
receive the weights, so the learner only needs the loss maths, which lives in guardray.core.ppo. We did not add an
SFT warm-start: the instruction-tuned default generator already answers the rewrite prompt in the right format.

The policy weights published to replicas are always plain HF names and shapes (LoRA deltas merged in), so an `hf`
replica can `load_state_dict` them and a `vllm` replica can `load_weights` them.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

try:
    import ray
except ImportError:  # LocalPPOLearner runs without Ray (scripts/gpu_check.py on a bare CUDA host); PPOLearner needs it
    ray = None

from guardray.core.config import GeneratorConfig, PPOConfig
from guardray.core.ppo import (KLController, ValueHead, entropy_from_logits, gae, logprobs_from_logits,
                               masked_mean, masked_whiten, policy_loss, stale_reason, token_rewards, value_loss)
from guardray.core.records import GenRequest, Generation, RewardBatch, Rollout
from guardray.errors import UsageError


class StaleRolloutError(RuntimeError):
    """update() got rollouts written by another policy version while ppo.stale_rollouts = "raise"."""


class LocalPPOLearner:
    """The learner's logic, in-process (no Ray): `PPOLearner` below is this class as a Ray actor."""

    def __init__(self, cfg: PPOConfig, gen_cfg: GeneratorConfig, seed: int = 0, threads: int = 0):
        from guardray.models import load_causal_lm, load_tokenizer, resolve
        if threads:  # resources.learner_threads: more torch threads than the actor's logical CPUs (see there)
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.cfg, self.gen_cfg, self.seed = cfg, gen_cfg, seed
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(cfg.policy_model)
        # fp32 master weights even on GPU: PPO steps are small and bf16 weights would round most of them away
        policy = load_causal_lm(cfg.policy_model, dtype="float32", device=self.device)
        self.model_config = policy.config
        self.max_positions = (getattr(policy.config, "max_position_embeddings", None)
                              or getattr(policy.config, "n_positions", None) or 1 << 30)
        if cfg.method == "lora":
            import peft
            self.ref = None  # the reference is the base model with the adapter disabled
            policy = peft.get_peft_model(policy, peft.LoraConfig(
                r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, target_modules="all-linear"))
        else:
            self.ref = copy.deepcopy(policy).eval().requires_grad_(False)
        # eval(): no dropout, so the logprobs recomputed in the update equal the ones the sampler saw
        self.policy = policy.eval()
        self.value_head = ValueHead(policy.config.hidden_size).to(self.device)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5, weight_decay=0.0)
        self.kl = KLController(cfg.kl_coef, cfg.kl_target)
        self._version = 0
        self._weights: tuple[int, ray.ObjectRef] | None = None
        self._resume(resolve(cfg.policy_model))

    def _resume(self, folder: str) -> None:
        """A folder written by `save` carries the version, KL coefficient and value head: pick them up, so a
        resumed run keeps counting versions and does not restart the critic from zero. (The KL reference is then
        the saved policy itself - resuming re-anchors the KL; the optimizer state starts fresh.)"""
        meta = Path(folder) / "guardray_ppo.json"
        if not meta.exists():
            return
        from safetensors.torch import load_file
        info = json.loads(meta.read_text())
        self._version = int(info.get("version", 0))
        self.kl.value = float(info.get("kl_coef", self.kl.value))
        head = Path(folder) / "value_head.safetensors"
        if head.exists():
            self.value_head.load_state_dict(load_file(str(head), device=self.device))

    # ---------------------------------------------------------------- small accessors

    def version(self) -> int:
        return self._version

    def ready(self) -> bool:
        return True

    # ---------------------------------------------------------------- sampling (tests and small runs)

    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        """Sample completions from the current policy exactly as a GeneratorReplica would (chat template,
        softmax(logits / temperature), no top-p/top-k), with token ids and logprobs, tagged with the version.

        Requests with the same prompt are sampled in one batch (no padding needed); meant for tests and tiny runs -
        production rollouts come from GeneratorReplicas."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            if r.top_p is not None and r.top_p < 1.0:
                raise UsageError(f"request {r.prompt_id}: top_p={r.top_p}; the learner samples its policy as is "
                                 "(top_p=1)")
            key = (r.prompt, r.max_new_tokens or self.cfg.max_new_tokens, r.temperature or self.cfg.temperature)
            groups.setdefault(key, []).append(i)
        out: list[Generation | None] = [None] * len(requests)
        eos = self.tokenizer.eos_token_id
        for (prompt, max_new, temp), idx in groups.items():
            p_ids = self._prompt_ids(prompt)
            first_seed = requests[idx[0]].seed
            torch.manual_seed(first_seed if first_seed is not None else self.seed * 7919 + self._version)
            x = torch.tensor([p_ids] * len(idx), device=self.device)
            with torch.no_grad(), self._autocast():
                res = self.policy.generate(
                    input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, temperature=temp, top_p=1.0,
                    top_k=0, max_new_tokens=max_new, output_logits=True, return_dict_in_generate=True,
                    pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
            new = res.sequences[:, x.shape[1]:]
            logps = torch.stack([torch.log_softmax(lg.float() / temp, -1) for lg in res.logits], 1)
            tok_lp = logps.gather(-1, new[:, :logps.shape[1]].unsqueeze(-1)).squeeze(-1)
            for row, i in enumerate(idx):
                ids = new[row].tolist()
                n = ids.index(eos) + 1 if eos in ids else len(ids)
                out[i] = Generation(
                    prompt_id=requests[i].prompt_id,
                    text=self.tokenizer.decode(ids[:n], skip_special_tokens=True,
                                               clean_up_tokenization_spaces=False),
                    prompt_token_ids=tuple(p_ids), token_ids=tuple(ids[:n]),
                    logprobs=tuple(float(v) for v in tok_lp[row, :n].tolist()),
                    finish_reason="stop" if eos in ids[:n] else "length",
                    sampling={"temperature": temp, "top_p": 1.0, "max_new_tokens": max_new},
                    model_version=self._version, generator=f"{self.cfg.policy_model}@learner")
        return out  # type: ignore[return-value]

    def _prompt_ids(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]
        return tok(prompt)["input_ids"]

    # ---------------------------------------------------------------- PPO update

    def update(self, rollouts: list[Rollout], rewards: RewardBatch) -> dict:
        """One PPO iteration on these rollouts and their rewards (same order). Returns the stats."""
        t0 = time.perf_counter()
        cfg = self.cfg
        n = len(rollouts)
        if n == 0:
            raise UsageError("update: no rollouts")
        if len(rewards.rewards) != n:
            raise UsageError(f"update: {n} rollouts but {len(rewards.rewards)} rewards; score the same list")
        for i, r in enumerate(rollouts):
            g = r.generation
            if not g.token_ids or not g.prompt_token_ids:
                raise UsageError(f"update: rollout {i} ({g.prompt_id}) has no token ids; generate it with "
                                 "GenRequest(want_logprobs=True)")
            if g.logprobs and len(g.logprobs) != len(g.token_ids):
                raise UsageError(f"update: rollout {i} ({g.prompt_id}) has {len(g.logprobs)} logprobs for "
                                 f"{len(g.token_ids)} tokens")
            temp = g.sampling.get("temperature") if isinstance(g.sampling, dict) else None
            if temp is not None and abs(float(temp) - cfg.temperature) > 1e-6:
                raise UsageError(f"update: rollout {i} ({g.prompt_id}) was sampled at temperature {temp}, but the "
                                 f"policy is softmax(logits / ppo.temperature={cfg.temperature}); send the attack "
                                 "requests with temperature=ppo.temperature")
            if len(g.prompt_token_ids) + len(g.token_ids) > self.max_positions:
                raise UsageError(f"update: rollout {i} has {len(g.prompt_token_ids) + len(g.token_ids)} tokens, "
                                 f"more than the policy's {self.max_positions} positions; lower max_new_tokens")

        # 1. behaviour logprobs, reference logprobs and values under the current weights; staleness check
        batch = self._collate(rollouts)
        old_lp, ref_lp, old_v = [], [], []
        with torch.no_grad():
            for s in range(0, n, cfg.minibatch_size):
                mb = self._slice(batch, slice(s, s + cfg.minibatch_size))
                lp, v, _ = self._policy_forward(mb, with_values=True)
                old_lp.append(lp)
                old_v.append(v)
                ref_lp.append(self._ref_forward(mb))
        old_lp, ref_lp, old_v = (torch.cat(x) for x in (old_lp, ref_lp, old_v))
        mask = batch["mask"]
        reasons, diffs = [], []
        for i, r in enumerate(rollouts):
            g = r.generation
            L = len(g.token_ids)
            gen_lp = torch.tensor(g.logprobs, device=self.device) if g.logprobs else None
            if gen_lp is not None:
                diffs.append((gen_lp - old_lp[i, :L]).abs().mean().item())
            reasons.append(stale_reason(r.policy_version, g.model_version, self._version, gen_lp,
                                        old_lp[i, :L], cfg.logprob_tol))
        stale = [i for i, why in enumerate(reasons) if why]
        keep = list(range(n))
        if stale:
            detail = "; ".join(f"{rollouts[i].generation.prompt_id}: {reasons[i]}" for i in stale[:3])
            if cfg.stale_rollouts == "raise":
                raise StaleRolloutError(
                    f"{len(stale)} of {n} rollouts are stale ({detail}); sync the replicas' weights before "
                    "generating, or set ppo.stale_rollouts=drop|recompute")
            if cfg.stale_rollouts == "drop":
                keep = [i for i in range(n) if not reasons[i]]
                if not keep:
                    raise StaleRolloutError(f"all {n} rollouts are stale ({detail}); nothing left to learn from")
            print(f"[PPOLearner] {len(stale)} stale rollout(s), policy={cfg.stale_rollouts}: {detail}", flush=True)
        if len(keep) < n:
            idx = torch.tensor(keep, device=self.device)
            batch = self._slice(batch, idx)
            old_lp, ref_lp, old_v, mask = old_lp[idx], ref_lp[idx], old_v[idx], batch["mask"]
        scores = torch.tensor([float(rewards.rewards[i]) for i in keep], device=self.device)
        m = len(keep)

        # 2. per-token rewards with the KL penalty, GAE, whitened advantages
        kl_coef = self.kl.value
        tok_r, kl = token_rewards(scores, old_lp, ref_lp, mask, kl_coef)
        adv, returns = gae(tok_r, old_v, mask, cfg.gamma, cfg.lam)
        adv = masked_whiten(adv, mask) if mask.sum() > 1 else adv
        seq_kl = kl.sum(1).mean().item()

        # 3. minibatch epochs
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._version)
        acc: dict[str, list[float]] = {k: [] for k in ("loss", "policy_loss", "value_loss", "clipfrac", "approx_kl",
                                                        "vf_clipfrac", "entropy", "grad_norm")}
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(m, generator=gen).to(self.device)
            for s in range(0, m, cfg.minibatch_size):
                idx = perm[s:s + cfg.minibatch_size]
                mb = self._slice(batch, idx)
                mmask = mask[idx]
                lp, v, ent = self._policy_forward(mb, with_values=True, entropy=True)
                pg, clipfrac, akl = policy_loss(lp, old_lp[idx], adv[idx], mmask, cfg.clip)
                vl, vclip = value_loss(v, old_v[idx], returns[idx], mmask, cfg.value_clip)
                loss = pg + cfg.vf_coef * vl
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    gn = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                else:
                    gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params
                                                               if p.grad is not None]))
                self.optimizer.step()
                for k, val in (("loss", loss), ("policy_loss", pg), ("value_loss", vl), ("clipfrac", clipfrac),
                               ("approx_kl", akl), ("vf_clipfrac", vclip), ("entropy", masked_mean(ent, mmask)),
                               ("grad_norm", gn)):
                    acc[k].append(float(val.detach()) if torch.is_tensor(val) else float(val))

        # 4. KL controller, version
        self.kl.update(seq_kl, m)
        self._version += 1
        stats = {k: sum(v) / len(v) for k, v in acc.items()}
        stats.update({
            "kl": seq_kl, "kl_coef": kl_coef, "kl_coef_next": self.kl.value,
            "mean_reward": float(scores.mean()), "mean_response_tokens": float(mask.sum(1).mean()),
            "n_rollouts": n, "stale_rollouts": len(stale), "dropped_rollouts": n - m,
            "logprob_diff": sum(diffs) / len(diffs) if diffs else float("nan"),
            "version": self._version, "seconds": time.perf_counter() - t0})
        for k, vals in (rewards.components or {}).items():  # the Scorer's components, over the rollouts used
            if len(vals) == n and k != "reward":
                stats[f"reward_{k}"] = float(sum(float(vals[i]) for i in keep) / m)
        return stats

    # ---------------------------------------------------------------- weights

    def generator_state_dict(self) -> dict[str, torch.Tensor]:
        """The policy weights under plain HF names (LoRA deltas merged), on CPU, for a GeneratorReplica."""
        dtype = None if self.gen_cfg.dtype == "auto" else getattr(torch, self.gen_cfg.dtype)
        with torch.no_grad():
            if self.cfg.method == "lora":
                base = self.policy.get_base_model()
                deltas = {}
                for name, mod in base.named_modules():
                    if hasattr(mod, "get_delta_weight") and hasattr(mod, "base_layer"):
                        deltas[f"{name}.weight"] = mod.get_delta_weight("default")
                sd = {}
                for k, v in base.state_dict().items():
                    if "lora_" in k:
                        continue
                    k = k.replace(".base_layer.", ".")
                    sd[k] = v + deltas[k] if k in deltas else v
            else:
                sd = self.policy.state_dict()
            return {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in sd.items()}

    def weights_ref(self) -> list[ray.ObjectRef]:
        """[ObjectRef of `generator_state_dict()`], put once per version (wrapped in a list so Ray passes the ref,
        not the dict). The learner keeps the ref alive until the next version."""
        if self._weights is None or self._weights[0] != self._version:
            self._weights = (self._version, ray.put(self.generator_state_dict()))
        return [self._weights[1]]

    def save(self, path: str) -> str:
        """HF folder (safetensors, LoRA merged) + tokenizer + value_head.safetensors + guardray_ppo.json."""
        from safetensors.torch import save_file
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        if self.cfg.method == "lora":
            from transformers import AutoModelForCausalLM
            plain = AutoModelForCausalLM.from_config(self.model_config)
            plain.load_state_dict(self.generator_state_dict())
            plain.save_pretrained(out, safe_serialization=True)
        else:
            self.policy.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(out / "value_head.safetensors"))
        (out / "guardray_ppo.json").write_text(json.dumps(
            {"version": self._version, "kl_coef": self.kl.value, "policy_model": self.cfg.policy_model,
             "method": self.cfg.method}, indent=2))
        return str(out)

    # ---------------------------------------------------------------- internals

    def _autocast(self):
        from guardray.precision import autocast
        return autocast(self.device, self.cfg.precision)

    def _collate(self, rollouts: list[Rollout]) -> dict[str, torch.Tensor]:
        """Right-padded prompt+completion ids, and per completion token: its id, the position whose logits
        predict it, and a validity mask."""
        seqs = [list(r.generation.prompt_token_ids) + list(r.generation.token_ids) for r in rollouts]
        S = max(len(s) for s in seqs)
        L = max(len(r.generation.token_ids) for r in rollouts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), S), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), S), dtype=torch.long)
        resp = torch.zeros((len(seqs), L), dtype=torch.long)
        pos = torch.zeros((len(seqs), L), dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.float32)
        for i, (s, r) in enumerate(zip(seqs, rollouts)):
            P, T = len(r.generation.prompt_token_ids), len(r.generation.token_ids)
            ids[i, :len(s)] = torch.tensor(s)
            att[i, :len(s)] = 1
            resp[i, :T] = torch.tensor(r.generation.token_ids)
            pos[i, :T] = torch.arange(P - 1, P - 1 + T)
            mask[i, :T] = 1.0
        d = {"ids": ids, "att": att, "resp": resp, "pos": pos, "mask": mask}
        return {k: v.to(self.device) for k, v in d.items()}

    @staticmethod
    def _slice(batch: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in batch.items()}

    @staticmethod
    def _completion_logits(model, mb: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, L, V], final hidden states [B, L, H]) at the positions that predict the completion tokens.

        The LM head runs on those L positions only (`logits_to_keep=1` skips it over the prompt, where a 49k-token
        vocabulary makes it costly): one PPO update of SmolLM2-135M on 16 x (200 + 40) tokens takes 70 s instead
        of 81 s; peak memory hardly moves (7.6 GB either way; benchmarks/learner_memory.md), so the learner's
        memory lies elsewhere. The last hidden state is the post-norm one the head reads (checked for GPT-2 and
        Llama: head(h) == logits exactly)."""
        out = model(input_ids=mb["ids"], attention_mask=mb["att"], output_hidden_states=True, logits_to_keep=1)
        h = out.hidden_states[-1]
        h = h.gather(1, mb["pos"].unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return model.get_output_embeddings()(h), h

    def _policy_forward(self, mb: dict, with_values: bool, entropy: bool = False):
        """(logprobs [B, L], values [B, L] or None, entropy [B, L] or None) of the completion tokens."""
        with self._autocast():
            logits, h = self._completion_logits(self.policy, mb)
        lp = logprobs_from_logits(logits, mb["resp"], self.cfg.temperature)
        values = self.value_head(h.float()) if with_values else None
        ent = entropy_from_logits(logits.detach(), self.cfg.temperature) if entropy else None
        return lp, values, ent

    def _ref_forward(self, mb: dict) -> torch.Tensor:
        with self._autocast():
            if self.ref is None:
                with self.policy.disable_adapter():
                    logits, _ = self._completion_logits(self.policy, mb)
            else:
                logits, _ = self._completion_logits(self.ref, mb)
        return logprobs_from_logits(logits, mb["resp"], self.cfg.temperature)


class _PPOLearnerActor(LocalPPOLearner):
    """Ray actor: the PPO learner (see the module docstring). Inputs: list[Rollout] + RewardBatch per update;
    outputs: stats dicts and an ObjectRef of the policy weights for the GeneratorReplicas."""


PPOLearner = ray.remote(_PPOLearnerActor) if ray is not None else None  # the actor class (`PPOLearner.options`)
