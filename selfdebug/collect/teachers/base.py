"""What every teacher does: given a wrong program and its execution feedback, write explanations and fixes."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from selfdebug.problems import Problem


@dataclass
class WrongSolution:
    """A program that failed its tests, with what the judge said. ``mutation`` is set for mutants."""

    solution_id: str
    problem: Problem
    code: str
    feedback: str
    status: str
    n_passed: int
    n_tests: int
    origin: str  # "student" (sampled) or "mutation" (a teacher injected the bug)
    mutation: dict | None = None
    student: str | None = None  # the student that wrote it (None for mutants)


@dataclass
class TeacherSample:
    """One explanation + refinement. ``code`` is None when the teacher's answer held no code."""

    explanation: str
    code: str | None
    raw: str = ""
    meta: dict = field(default_factory=dict)


class Teacher(abc.ABC):
    """``explain_and_refine(wrongs, m)[i]`` holds up to ``m`` samples for ``wrongs[i]``.

    A teacher that cannot explain a program returns an empty list for it; the caller counts the reason.
    """

    name: str = "teacher"
    model: str = ""

    @abc.abstractmethod
    def explain_and_refine(self, wrongs: list[WrongSolution], m: int, seed: int) -> list[list[TeacherSample]]:
        ...

    def propose_wrong(self, problem: Problem, k: int) -> list[tuple[str, dict]]:
        """Wrong programs this teacher makes itself, as (code, metadata); only the mutation teacher does."""
        return []

    def close(self) -> None:
        pass
