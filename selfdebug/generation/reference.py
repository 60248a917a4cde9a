"""The reference backend: answers with each problem's reference solution (a sanity check of the pipeline)."""

from __future__ import annotations

from collections.abc import Sequence

from selfdebug.core.errors import ConfigError
from selfdebug.generation.base import GenerationRequest, Generator, SamplingParams

REFERENCE_EXPLANATION = "The reference solution solves the problem as follows."


class ReferenceGenerator(Generator):
    """Answers every request with the problem's reference solution: a sanity check of the whole path."""

    @property
    def name(self) -> str:
        return "reference"

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[str]]:
        out = []
        for k, r in enumerate(requests):
            if r.problem is None:
                raise ConfigError(f"generation.kind=reference: request {k} carries no problem to answer")
            if not r.problem.reference:
                raise ConfigError(
                    f"generation.kind=reference: problem {r.problem.task_id} ({r.problem.source}) has no "
                    "reference solution; use a data set with references or another generator kind"
                )
            text = f"{REFERENCE_EXPLANATION}\n```python\n{r.problem.reference.rstrip()}\n```"
            out.append([text] * params.n)
        return out
