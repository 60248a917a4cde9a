"""The one ``Problem`` type every stage sees."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfdebug.execution.spec import TestSuite


@dataclass(frozen=True)
class Problem:
    """A programming problem as every stage sees it.

    ``prompt``: the natural-language task shown to the model (for HumanEval, the function signature and
    docstring). ``starter_code``: code the completion continues or must keep (HumanEval's prompt), empty
    otherwise. ``reference``: a complete correct program, if the data set has one. ``tests_shown``: the
    test strings shown to the model in the prompt (MBPP shows its asserts; HumanEval's are in the docstring).

    Repair benchmarks (``humanevalfix``, ``mbpp_mutants``) hand the model a wrong program instead of asking for
    one: ``given_program`` is that program (None elsewhere). ``feedback_tests``: the tests whose execution
    feedback the model may see when they differ from the judged ``tests`` (HumanEvalFix shows its docstring
    examples, judges on the hidden ``test``; an empty suite: none may be shown); None: feedback from ``tests``.
    """

    task_id: str
    source: str
    prompt: str
    tests: TestSuite
    entry_point: str | None = None
    starter_code: str = ""
    reference: str | None = None
    tests_shown: tuple[str, ...] = ()
    given_program: str | None = None
    feedback_tests: TestSuite | None = None
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
