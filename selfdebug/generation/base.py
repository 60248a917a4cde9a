"""The generation interface every backend implements: sampling parameters, requests, ``Generator``."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from selfdebug.core.errors import ConfigError

if TYPE_CHECKING:
    from selfdebug.problems import Problem


@dataclass
class SamplingParams:
    """``n`` completions per request; ``temperature == 0`` means greedy decoding."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"generation.n: must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"generation.temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generation.top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens: must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerationRequest:
    """Chat ``messages`` to complete; ``problem`` travels along for backends that need it (reference)."""

    messages: list[dict]
    problem: Problem | None = None


class Generator(abc.ABC):
    """Turns requests into completions: ``generate(reqs, params)[i]`` holds ``params.n`` strings."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[str]]:
        ...

    @property
    @abc.abstractmethod
    def name(self) -> str:
        ...

    def close(self) -> None:
        """Release the model or connections; the generator is unusable afterwards."""

    def __enter__(self) -> Generator:  # noqa: PYI034 -- Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
