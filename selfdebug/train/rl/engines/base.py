"""What every rollout engine is: an object the PPO module owns and calls through three methods.

    engine.sync(policy)         # before a step's first rollout: the policy's current weights
    engine.generate(prompts)    # -> Samples: response token ids per prompt (stop token kept)
    engine.close()              # free what it holds (KV cache, a weight copy)
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


class RolloutEngine(Protocol):
    def sync(self, policy) -> None: ...

    def generate(self, prompts: Sequence[Sequence[int]]) -> Samples: ...

    def close(self) -> None: ...
