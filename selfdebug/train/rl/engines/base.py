"""What every rollout engine is: an object the PPO module owns and calls through three methods.

    engine.sync(policy)               # before a step's first rollout: the policy's current weights
    engine.generate(prompts, seeds)   # -> Samples: response token ids per prompt (stop token kept)
    engine.metrics()                  # the last sync's figures (bytes moved), for the step's metrics
    engine.close()                    # free what it holds (KV cache, a weight copy)

Both engines sample the same way: ``Sampling``'s temperature and top_p over the whole vocabulary (no top_k),
at most ``max_new_tokens``, ending at the first of ``stop_ids`` (kept). Stop strings that are not one token are
cut after sampling, by ``read_response``, for both engines alike. Seeds: the HF engine samples the batch from
torch's RNG (seeded per step and rank); the vLLM engine seeds each rollout on its own from ``rollout_seeds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    """How rollouts are sampled (``rl.temperature``, ``rl.top_p``, ``rl.max_new_tokens``) and where they stop."""

    temperature: float
    top_p: float
    max_new_tokens: int
    stop_ids: tuple[int, ...]


@dataclass
class Samples:
    """Response token ids per prompt; with ``rl.rollout_logprobs=generation`` also each token's log-prob and
    value as sampling computed them (``[B, R]`` tensors, else None)."""

    ids: list[list[int]]
    logprobs: object | None = None
    values: object | None = None


def rollout_rows(n: int, rank: int, world: int, samples_per_prompt: int) -> list[int]:
    """Where each of a rank's ``n`` rollouts sits in the one-process step: rank ``r`` takes prompts
    ``r, r + world, ...`` of the step, each ``samples_per_prompt`` times in a row."""
    k = samples_per_prompt
    return [(rank + (j // k) * world) * k + j % k for j in range(n)]


def rollout_seeds(seed: int, step: int, rows: Sequence[int]) -> list[int]:
    """A sampling seed per rollout from the run's seed, the PPO step and the rollout's row in the step: the
    same rollout gets the same seed on any number of ranks, and a resumed run repeats an uninterrupted one."""
    base = (int(seed) * 1_000_003 + int(step) * 7_919) % (2**31 - 1)
    return [(base + 104_729 * int(r)) % (2**31 - 1) for r in rows]


class RolloutEngine(Protocol):
    def sync(self, policy) -> None: ...

    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None) -> Samples: ...

    def metrics(self) -> dict: ...

    def close(self) -> None: ...
