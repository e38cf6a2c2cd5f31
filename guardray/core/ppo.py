"""PPO maths for the RL generator (pure torch, no Ray): the pieces `guardray.learner.PPOLearner` calls.

    token_rewards    per-token reward = -kl_coef * (logp - ref_logp), plus the sequence reward on the last token
    gae              generalised advantage estimation over right-padded token sequences
    masked_whiten    zero-mean, unit-variance advantages over the valid tokens only
    policy_loss      clipped surrogate objective (Schulman et al. 2017), with clip fraction and approx KL
    value_loss       clipped value loss (PPO2 / TRL style: max of clipped and unclipped squared error)
    approx_kl        k3 estimator of KL(old || new) from sampled tokens (Schulman, "Approximating KL")
    KLController     fixed or adaptive KL coefficient (Ziegler et al. 2019)
    stale_reason     why a rollout must not be used as on-policy data ("" when it is fresh)
    ValueHead        a linear head mapping the policy's last hidden state to a scalar value

Conventions: tensors are [batch, tokens] over the *completion* tokens only, right-padded, with `mask` 1.0 on real
tokens (a contiguous prefix of each row). Every function is checked against hand-computed numbers in
tests/test_ppo.py. Pure: imports neither ray nor vllm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


# ---------------------------------------------------------------- masked statistics

def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions (Bessel-corrected by default, like torch.var)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked positions; padded positions come out as 0.

    With shift_mean=False the mean is added back (only the scale changes)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ---------------------------------------------------------------- rewards and advantages

def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) of the given tokens: [B, T, V], [B, T] -> [B, T].

    The same definition the GeneratorReplica uses for its logprobs (temperature, no top-p/top-k), so that the
    policy being optimised is exactly the distribution that is sampled."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (logp - ref_logp) on every token, plus the sequence score on the last one.

    scores [B] (one reward per rollout, from the Scorer), the rest [B, T]. Returns (rewards [B, T], kl [B, T]),
    where kl is the per-token k1 estimate logp - ref_logp (zero on padding)."""
    m = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * m
    rewards = -kl_coef * kl
    lengths = m.sum(1).long()
    if (lengths < 1).any():
        raise ValueError("token_rewards: every rollout needs at least one completion token")
    rewards[torch.arange(len(lengths)), lengths - 1] += scores.to(rewards.dtype)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded sequences.

    delta_t = r_t + gamma * V_{t+1} - V_t (V after the last real token is 0: the episode ends there),
    A_t = delta_t + gamma * lam * A_{t+1}. Returns (advantages, returns = advantages + values), both zero on
    padding."""
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        nxt_m = m[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        nxt_v = values[:, t + 1] * nxt_m if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * nxt_v - values[:, t]
        last = delta + gamma * lam * nxt_m * last
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + values) * m


# ---------------------------------------------------------------- losses

def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate: mean over tokens of max(-A * r, -A * clip(r, 1-eps, 1+eps)), r = exp(logp - old).

    Returns (loss, clipfrac = share of tokens where the clipped term won, approx_kl(old || new))."""
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    clipfrac = masked_mean((pg2 > pg1).to(logprobs.dtype), mask)
    return loss, clipfrac.detach(), approx_kl(logprobs.detach(), old_logprobs, mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * mean over tokens of max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clip(V - V_old, +-eps).

    Returns (loss, vf_clipfrac)."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    l1 = (values - returns) ** 2
    l2 = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    return loss, masked_mean((l2 > l1).to(values.dtype), mask).detach()


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(old || new) on tokens sampled from old: mean of (r - 1) - log r, r = p_new / p_old.

    Unbiased and never negative, unlike the plain mean of log-ratios."""
    log_r = logprobs - old_logprobs
    return masked_mean(torch.expm1(log_r) - log_r, mask)


# ---------------------------------------------------------------- KL coefficient

@dataclass
class KLController:
    """KL penalty coefficient: fixed (target == 0) or adaptive towards `target` (Ziegler et al. 2019).

    Adaptive: e = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + e * n_steps / horizon, where KL is the mean
    per-sequence KL to the reference and n_steps the rollouts in the update. horizon=10_000 follows the paper."""
    value: float
    target: float = 0.0
    horizon: int = 10_000

    def update(self, current_kl: float, n_steps: int) -> float:
        if self.target > 0 and math.isfinite(current_kl):
            err = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + err * n_steps / self.horizon
        return self.value


# ---------------------------------------------------------------- staleness

def stale_reason(rollout_version: int, generation_version: int, learner_version: int,
                 gen_logprobs: torch.Tensor | None = None, learner_logprobs: torch.Tensor | None = None,
                 logprob_tol: float = 0.0) -> str:
    """Why a rollout is not on-policy for the learner's current weights ("" when it is).

    Stale when its recorded policy version differs from the learner's, or, when the generator returned logprobs
    and logprob_tol > 0, when their mean absolute difference from the learner's own recomputation exceeds
    logprob_tol (the replica did not hold the weights it claims, or samples from a different distribution)."""
    if rollout_version != learner_version or generation_version != learner_version:
        return (f"policy version {rollout_version} (generation {generation_version}) != learner version "
                f"{learner_version}")
    if logprob_tol > 0 and gen_logprobs is not None and learner_logprobs is not None and len(gen_logprobs):
        diff = (gen_logprobs.float() - learner_logprobs.float()).abs().mean().item()
        if diff > logprob_tol:
            return f"generator logprobs differ from the learner's by {diff:.3f} per token (> {logprob_tol})"
    return ""


# ---------------------------------------------------------------- value head

class ValueHead(nn.Module):
    """V(s_t) = w . h_t + b on the policy's last hidden state. Zero-initialised: values start at 0, so the first
    advantages are the plain discounted returns rather than noise from a random head."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)
