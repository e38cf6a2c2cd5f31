"""PPO maths (guardray.core.ppo) against hand-computed numbers. Pure torch, no Ray, no models; runs in a second."""
import math

import pytest
import torch

from guardray.core.ppo import (KLController, ValueHead, approx_kl, gae, logprobs_from_logits, masked_mean,
                               masked_var, masked_whiten, policy_loss, stale_reason, token_rewards, value_loss)

T = torch.tensor


def test_masked_mean_var_whiten_ignore_padding():
    x = T([[1.0, 2.0, 3.0, 100.0]])
    m = T([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_var(x, m).item() == pytest.approx(1.0)  # ((1)^2 + 0 + (1)^2) / (3 - 1)
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    w = masked_whiten(x, m)
    assert w.tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)  # padding comes out 0
    w2 = masked_whiten(x, m, shift_mean=False)
    assert w2.tolist()[0][:3] == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)
    assert masked_mean(T([[1.0, 3.0], [5.0, 7.0]]), T([[1.0, 0.0], [1.0, 1.0]]), dim=1).tolist() == [1.0, 6.0]


def test_token_rewards_kl_on_every_token_score_on_the_last():
    lp = T([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = T([[-1.5, -1.0, -9.0], [-0.5, -9.0, -9.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    r, kl = token_rewards(T([2.0, -1.0]), lp, ref, mask, kl_coef=0.1)
    # row 0: kl = [0.5, -1.0] -> rewards [-0.05, 0.1 + 2.0]; padding stays 0 whatever the logprobs say
    assert kl.tolist()[0] == pytest.approx([0.5, -1.0, 0.0])
    assert r.tolist()[0] == pytest.approx([-0.05, 2.1, 0.0])
    # row 1: one token, kl 0 -> just the score
    assert r.tolist()[1] == pytest.approx([-1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least one completion token"):
        token_rewards(T([1.0]), lp[:1], ref[:1], T([[0.0, 0.0, 0.0]]), 0.1)


def test_gae_hand_computed_with_padding():
    # gamma 1, lambda 0.5, r = [0, 0, 1], V = [0.5, 0.2, 0.4]:
    # t2: delta = 1 - 0.4 = 0.6                      A2 = 0.6
    # t1: delta = 0 + 0.4 - 0.2 = 0.2                A1 = 0.2 + 0.5 * 0.6 = 0.5
    # t0: delta = 0 + 0.2 - 0.5 = -0.3               A0 = -0.3 + 0.5 * 0.5 = -0.05
    # returns = A + V = [0.45, 0.7, 1.0]
    r = T([[0.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    v = T([[0.5, 0.2, 0.4], [1.0, 0.5, 9.0]])
    m = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    assert adv[0].tolist() == pytest.approx([-0.05, 0.5, 0.6])
    assert ret[0].tolist() == pytest.approx([0.45, 0.7, 1.0])
    # row 1 ends after 2 tokens: the value 9.0 and reward 7.0 on padding must not leak in.
    # t1: delta = 2 - 0.5 = 1.5 = A1;  t0: delta = 0 + 0.5 - 1.0 = -0.5, A0 = -0.5 + 0.5 * 1.5 = 0.25
    assert adv[1].tolist() == pytest.approx([0.25, 1.5, 0.0])
    assert ret[1].tolist() == pytest.approx([1.25, 2.0, 0.0])


def test_gae_discount():
    # gamma 0.9, lambda 1: A_t = discounted return - V_t; r = [0, 1], V = 0 -> A = [0.9, 1]
    adv, ret = gae(T([[0.0, 1.0]]), T([[0.0, 0.0]]), T([[1.0, 1.0]]), gamma=0.9, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.9, 1.0])
    assert ret[0].tolist() == pytest.approx([0.9, 1.0])


def test_policy_loss_clips_only_in_the_direction_of_the_advantage():
    old = T([[0.0, 0.0]])
    new = T([[math.log(1.5), math.log(1.5)]])
    m = T([[1.0, 1.0]])
    # A = +1, ratio 1.5: unclipped -1.5, clipped -1.2 -> max = -1.2 (clipped); A = -1: 1.5 vs 1.2 -> 1.5
    loss, clipfrac, akl = policy_loss(new, old, T([[1.0, -1.0]]), m, clip=0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    # k3: (r - 1) - log r = 0.5 - log 1.5
    assert akl.item() == pytest.approx(0.5 - math.log(1.5))
    # inside the trust region nothing is clipped and the gradient is -A * r
    new2 = T([[0.05, 0.05]], requires_grad=True)
    loss2, cf2, _ = policy_loss(new2, old, T([[1.0, 1.0]]), m, clip=0.2)
    loss2.backward()
    assert cf2.item() == 0.0
    assert new2.grad.tolist()[0] == pytest.approx([-math.exp(0.05) / 2] * 2)
    # padding does not count
    loss3, _, _ = policy_loss(T([[math.log(1.5), 5.0]]), old, T([[1.0, 100.0]]), T([[1.0, 0.0]]), clip=0.2)
    assert loss3.item() == pytest.approx(-1.2)


def test_value_loss_takes_the_larger_of_clipped_and_unclipped():
    m = T([[1.0]])
    # V=1.0, V_old=0.5, R=0: unclipped 1.0, clipped V=0.7 -> 0.49; max 1.0 -> 0.5 * 1.0
    loss, frac = value_loss(T([[1.0]]), T([[0.5]]), T([[0.0]]), m, clip=0.2)
    assert loss.item() == pytest.approx(0.5) and frac.item() == 0.0
    # V=1.0, V_old=0.5, R=1.0: unclipped 0, clipped (0.7 - 1)^2 = 0.09 -> 0.045
    loss, frac = value_loss(T([[1.0]]), T([[0.5]]), T([[1.0]]), m, clip=0.2)
    assert loss.item() == pytest.approx(0.045) and frac.item() == 1.0


def test_approx_kl_k3_zero_iff_equal_and_positive():
    m = T([[1.0, 1.0]])
    assert approx_kl(T([[-1.0, -2.0]]), T([[-1.0, -2.0]]), m).item() == 0.0
    # log r = log 2 and -log 2: ((2 - 1) - log 2 + (0.5 - 1) + log 2) / 2 = 0.25
    assert approx_kl(T([[math.log(2), -math.log(2)]]), T([[0.0, 0.0]]), m).item() == pytest.approx(0.25)


def test_logprobs_from_logits_uses_temperature():
    logits = T([[[2.0, 0.0]]])
    lp = logprobs_from_logits(logits, T([[0]]), temperature=2.0)  # softmax([1, 0])[0] = e / (e + 1)
    assert lp.item() == pytest.approx(math.log(math.e / (math.e + 1)))


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.1, target=0.0)
    assert fixed.update(50.0, 1000) == 0.1
    ad = KLController(0.1, target=6.0, horizon=10_000)
    # KL 12 -> error clipped to +0.2 -> coef * (1 + 0.2 * 100 / 10000) = 0.1002
    assert ad.update(12.0, 100) == pytest.approx(0.1002)
    # KL 5.4 -> error -0.1 -> * (1 - 0.1 * 1000 / 10000) = * 0.99
    assert ad.update(5.4, 1000) == pytest.approx(0.1002 * 0.99)
    assert ad.update(float("nan"), 100) == pytest.approx(0.1002 * 0.99)  # a NaN KL never poisons the coef


def test_stale_reason():
    assert stale_reason(3, 3, 3) == ""
    assert "policy version 2" in stale_reason(2, 2, 3)
    assert "generation 2" in stale_reason(3, 2, 3)
    lp = T([-1.0, -2.0])
    assert stale_reason(3, 3, 3, lp, lp + 0.01, logprob_tol=0.5) == ""
    assert "differ" in stale_reason(3, 3, 3, lp, lp + 1.0, logprob_tol=0.5)
    assert stale_reason(3, 3, 3, lp, lp + 1.0, logprob_tol=0.0) == ""  # 0 disables the logprob check


def test_value_head_starts_at_zero_and_learns():
    head = ValueHead(4)
    h = torch.randn(2, 3, 4)
    assert head(h).shape == (2, 3) and head(h).abs().max().item() == 0.0
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        ((head(h) - 1.0) ** 2).mean().backward()
        opt.step()
    assert head(h).mean().item() == pytest.approx(1.0, abs=0.05)
