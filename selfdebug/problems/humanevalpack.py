"""HumanEvalPack (OctoPack), Python split: HumanEval with one human-written bug per task."""

from __future__ import annotations

import os

from selfdebug.core.errors import DataError
from selfdebug.execution.spec import TestSuite
from selfdebug.problems.humaneval import split_humaneval_check
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import dataset_records, required_field, required_strings


def load_humanevalpack(path: str | os.PathLike | None = None, hub_id: str | None = None,
                       hub_config: str = "python", hub_split: str = "test") -> list[Problem]:
    """HumanEvalPack's Python split (OctoPack): HumanEval with one human-written bug per task.

    Each problem is HumanEval's, judged on the full ``test``; ``metadata["buggy_program"]`` is the wrong
    program ``declaration + buggy_solution`` (also ``given_program``, the start of the repair benchmark) and
    ``bug_type`` its kind. ``tests_shown`` are the docstring examples (``example_test``), the tests a model may
    see; ``feedback_tests`` runs them, so execution feedback never quotes the hidden test. ``path`` defaults to the packaged file;
    ``hub_id`` (``bigcode/humanevalpack``, ``hub_config`` ``python``) reads the hub instead.
    """
    problems = []
    for where, rec in dataset_records(path, hub_id, hub_config, hub_split, "humanevalpack-python.jsonl"):
        task_id = str(required_field(rec, "task_id", where))
        prompt, declaration, entry, buggy, solution, test = required_strings(
            rec, where, task_id, "prompt", "declaration", "entry_point", "buggy_solution", "canonical_solution", "test")
        test = _without_check_call(test, entry)
        if not test.strip():
            raise DataError(f"{where}: task {task_id} has no tests (empty 'test')")
        split = split_humaneval_check(test, entry)
        setup, asserts = split if split is not None else (test, (f"check({entry})",))
        example = split_humaneval_check(_without_check_call(rec.get("example_test") or "", entry), entry)
        # The docstring examples are all the model may run; 7 tasks have none (an empty suite, not the hidden test).
        shown = TestSuite(kind="assert", setup=example[0], asserts=example[1]) if example else TestSuite(kind="assert")
        problems.append(Problem(
            task_id=task_id, source="humanevalfix", prompt=prompt, entry_point=entry, starter_code=prompt,
            tests=TestSuite(kind="assert", setup=setup, asserts=asserts), reference=declaration + solution,
            tests_shown=shown.asserts, given_program=declaration + buggy, feedback_tests=shown,
            metadata={"buggy_program": declaration + buggy, "bug_type": rec.get("bug_type") or "",
                      "failure_symptoms": rec.get("failure_symptoms") or "", "check_split": split is not None},
        ))
    return problems


def _without_check_call(test: str, entry_point: str) -> str:
    """HumanEvalPack's tests end by calling ``check(<entry point>)``; the judge makes that call itself."""
    lines = test.rstrip().splitlines()
    if lines and lines[-1].strip() == f"check({entry_point})":
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""

