"""PPO math on hand-computed cases."""

import math

import pytest
import torch

from selfdebug.train.rl.ppo_math import (AdaptiveKLController, FixedKLController, entropy_from_logits, explained_variance,
                                    gae, kl_estimate, leave_one_out, masked_mean, masked_whiten, policy_loss,
                                    value_loss)


def test_gae_by_hand():
    # One sequence of 3 real tokens and one of 2 (the third is padding).
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    gamma, lam = 0.9, 0.5
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # Sequence 0: deltas d2 = 1 - 0.4 = 0.6, d1 = 0 + 0.9*0.4 - 0.2 = 0.16, d0 = 0 + 0.9*0.2 - 0.5 = -0.32
    a2 = 0.6
    a1 = 0.16 + 0.45 * a2
    a0 = -0.32 + 0.45 * a1
    # Sequence 1: the padded token's reward and value must not leak: d1 = 2 - 0 = 2, d0 = 0.5 + 0.9*0 - 1 = -0.5
    b1 = 2.0
    b0 = -0.5 + 0.45 * b1
    assert adv.flatten().tolist() == pytest.approx([a0, a1, a2, b0, b1, 0.0])
    assert ret.flatten().tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4, b0 + 1.0, b1 + 0.0, 0.0])


def test_gae_with_lambda_one_gives_discounted_returns():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.zeros(1, 3)
    _, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.99, lam=1.0)
    assert ret[0, 0].item() == pytest.approx(1 + 0.99 * 2 + 0.99 ** 2 * 3)


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)  # unbiased std of 1,2,3 is 1
    assert w[0, 3].item() == 0.0
    assert masked_whiten(x, mask, shift_mean=False)[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-4)


def test_kl_estimators():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = 0.25 / 0.5
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(lp, ref, "abs").item() == pytest.approx(math.log(2))
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx((r - 1) - math.log(r))
    assert kl_estimate(ref, lp, "k3").item() >= 0
    with pytest.raises(ValueError):
        kl_estimate(lp, ref, "k9")


def test_clipped_policy_loss():
    adv = torch.tensor([[1.0, -1.0]])
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.8, 0.8]]))  # ratio 1.6 on both tokens
    loss, stats = policy_loss(new, old, adv, torch.ones(1, 2), clip_range=0.2)
    # token 0: max(-1*1.6, -1*1.2) = -1.2 ; token 1: max(1.6, 1.2) = 1.6
    assert loss.item() == pytest.approx((-1.2 + 1.6) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["ratio"].item() == pytest.approx(1.6)


def test_clipped_value_loss():
    old, new, ret = torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[2.0]])
    loss, stats = value_loss(new, old, ret, torch.ones(1, 1), clip_range=0.5)
    # unclipped (1-2)^2 = 1 ; clipped value 0.5 -> (0.5-2)^2 = 2.25 ; 0.5 * max = 1.125
    assert loss.item() == pytest.approx(1.125) and stats["vf_clipfrac"].item() == 1.0
    loss, _ = value_loss(new, old, ret, torch.ones(1, 1), clip_range=None)
    assert loss.item() == pytest.approx(0.5)


def test_entropy_and_explained_variance():
    uniform = torch.zeros(1, 1, 4)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(4))
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.ones(1, 3)
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, mask) == pytest.approx(0.0)


def test_leave_one_out_baseline_by_hand():
    # Two prompts, three samples each: a sample minus the mean of its two siblings.
    rewards = torch.tensor([4.0, -5.0, -5.0, 1.0, 1.0, 1.0])
    out = leave_one_out(rewards, 3)
    torch.testing.assert_close(out, torch.tensor([9.0, -4.5, -4.5, 0.0, 0.0, 0.0]))
    # With two samples each is the difference to its one sibling; the group's mean is zero either way.
    torch.testing.assert_close(leave_one_out(torch.tensor([2.0, -1.0]), 2), torch.tensor([3.0, -3.0]))
    assert leave_one_out(torch.randn(12), 4).reshape(3, 4).sum(1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out(rewards, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        leave_one_out(rewards, 4)


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    fixed.update(10.0, 64)
    assert fixed.value == 0.1
    adaptive = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    adaptive.update(12.0, 1000)  # error clipped to +0.2
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 1000 / 10000))
    adaptive.update(3.0, 1000)  # error -0.5 clipped to -0.2
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.98)
    clone = AdaptiveKLController(1.0, 6.0, 10000)
    clone.load_state_dict(adaptive.state_dict())
    assert clone.value == adaptive.value


def test_gradient_cosine_by_hand():
    from selfdebug.train.rl.ppo_math import gradient_cosine

    a = [torch.tensor([[1.0, 0.0]]), torch.tensor([2.0])]
    b = [torch.tensor([[1.0, 1.0]]), torch.tensor([0.0])]
    assert gradient_cosine(a, b) == pytest.approx(1.0 / (5 ** 0.5 * 2 ** 0.5))  # dot 1, norms sqrt 5 and sqrt 2
    assert gradient_cosine(a, [-t for t in a]) == pytest.approx(-1.0)
    # Shards on two ranks: summing the parts first gives the cosine of the whole vectors.
    assert gradient_cosine(a, b, all_reduce=lambda t: 2 * t) == pytest.approx(gradient_cosine(a, b))
    assert math.isnan(gradient_cosine(a, [torch.zeros(1, 2), torch.zeros(1)]))
