"""The PPO math as small pure functions on tensors (no Lightning, no model), each tested on hand-computed cases.

Shapes: ``[batch, T]`` over response tokens, right-padded; ``mask`` is 1 on real tokens, 0 on padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None,
                all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mean of ``x`` over the real tokens. ``all_reduce`` (sums a tensor over the data-parallel ranks): the mean
    over every rank's tokens (``dim=None`` only)."""
    mask = mask.to(x.dtype)
    if dim is None:
        if all_reduce is not None:
            total, count = all_reduce(torch.stack([(x * mask).sum(), mask.sum()]))
            return total / count.clamp(min=1.0)
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True,
               all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Variance over the real tokens (of every rank, with ``all_reduce``); two passes, as on one process."""
    mean = masked_mean(x, mask, all_reduce=all_reduce)
    if all_reduce is not None:
        m = mask.to(x.dtype)
        total, n = all_reduce(torch.stack([((x - mean) ** 2 * m).sum(), m.sum()]))
        var = total / n.clamp(min=1.0)
    else:
        var = masked_mean((x - mean) ** 2, mask)
        n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Zero mean, unit variance over the real tokens (the mean is restored when ``shift_mean`` is False).
    Under data parallelism pass ``all_reduce``: the statistics are then those of every rank's tokens, so
    each rank whitens exactly as one process holding the whole batch would."""
    mean, var = masked_mean(x, mask, all_reduce=all_reduce), masked_var(x, mask, all_reduce=all_reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per token; the value after a sequence's last real token is 0.

    Returns ``(advantages, returns)`` with ``returns = advantages + values``, both zero on padding.
    """
    mask = mask.to(rewards.dtype)
    batch, steps = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(batch, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < steps else 0.0)) * mask[:, t]
        advantages[:, t] = last
    returns = (advantages + values) * mask
    return advantages, returns


def leave_one_out(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """Each reward minus the mean of the other ``group - 1`` rewards of its group (RLOO's baseline).

    ``rewards``: ``[B]`` with the samples of one prompt next to each other, ``B`` a multiple of ``group``. What
    is left is how much better a sample did than its siblings on the same prompt, so a prompt every sample
    passes (or fails) pushes no sample up or down."""
    if group < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 samples per prompt, got {group}")
    if rewards.numel() % group:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group}")
    grouped = rewards.reshape(-1, group)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group - 1)
    return (grouped - others).reshape(rewards.shape)


def gradient_cosine(previous: list[torch.Tensor], current: list[torch.Tensor],
                    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Cosine between two gradients given as matching lists of tensors (each rank's shard or replica; with
    ``all_reduce`` the dot product and norms are summed over the ranks first). NaN when either is zero."""
    device = current[0].device if current else torch.device("cpu")  # the gradients' device: NCCL reduces there
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for a, b in zip(previous, current, strict=True):
        a, b = a.double().flatten(), b.double().flatten()
        sums += torch.stack([(a * b).sum(), (a * a).sum(), (b * b).sum()])
    if all_reduce is not None:
        sums = all_reduce(sums)
    dot, aa, bb = sums.tolist()
    return dot / math.sqrt(aa * bb) if aa > 0 and bb > 0 else float("nan")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of the sampled tokens.

    ``k1``: log r; ``abs``: |log r|; ``k2``: (log r)^2 / 2; ``k3``: (r - 1) - log r with r = pi_ref / pi
    (Schulman's unbiased, always non-negative estimator)."""
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "abs":
        return log_ratio.abs()
    if kind == "k2":
        return 0.5 * log_ratio ** 2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; choose k1, abs, k2 or k3")


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate objective (to minimise), with clip fraction and approximate KL to the old policy."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
                 "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
                 "ratio": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float | None) -> tuple[torch.Tensor, dict]:
    """Squared error to the returns; with ``clip_range``, the pessimistic max of clipped and unclipped."""
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * masked_mean(unclipped, mask), {"vf_clipfrac": torch.zeros(())}
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, {"vf_clipfrac": masked_mean((clipped > unclipped).float(), mask).detach()}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, 0 no better than a constant."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_returns)


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Proportional control of the KL coefficient towards a target KL (Ziegler et al., 2019)."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon
