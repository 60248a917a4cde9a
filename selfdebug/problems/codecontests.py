"""CodeContests (Li et al. 2022): standard-input problems with public, private and generated tests."""

from __future__ import annotations

import logging
import os

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.execution.spec import TestSuite
from selfdebug.problems.datafiles import hub_rows
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import as_text, iter_records, required_field

log = logging.getLogger(__name__)

CODECONTESTS_PYTHON3 = 3  # the ``language`` code of Python 3 solutions in CodeContests


def load_codecontests(path: str | os.PathLike | None = None, split: str = "train",
                      hub_id: str = "deepmind/code_contests", max_tests: int | None = None,
                      include_generated: bool = True) -> list[Problem]:
    """CodeContests rows (``name, description, public_tests, private_tests, generated_tests, solutions``).

    A ``stdio`` suite from the public, private and (``include_generated``) generated tests, in that order,
    without duplicates, at most ``max_tests``; the first Python 3 solution is the reference. Rows without
    tests are skipped, counted in a log warning. Task ids are ``CodeContests/<split>/<name>``.
    """
    check_codecontests_args(max_tests=max_tests)
    rows = iter_records(path) if path is not None else hub_rows(hub_id, split)
    problems: list[Problem] = []
    skipped = total = 0
    groups = ("public_tests", "private_tests") + (("generated_tests",) if include_generated else ())
    for where, rec in rows:
        total += 1
        name = str(required_field(rec, "name", where))
        task_id = f"CodeContests/{split}/{name}"
        description = required_field(rec, "description", where, task_id, str)
        pairs: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        counts = {}
        for group in groups:
            got = _cc_tests(rec.get(group), group, where, task_id)
            counts[group] = len(got)
            for pair in got:
                if pair not in seen:
                    seen.add(pair)
                    pairs.append(pair)
        if max_tests is not None:
            pairs = pairs[:max_tests]
        if not pairs:
            skipped += 1
            continue
        problems.append(Problem(
            task_id=task_id, source="codecontests", prompt=description,
            tests=TestSuite(kind="stdio", stdio=tuple(pairs)), reference=_cc_python3(rec.get("solutions")),
            metadata={"name": name, "difficulty": rec.get("difficulty"), "source": rec.get("source"),
                      "time_limit": rec.get("time_limit"), "memory_limit_bytes": rec.get("memory_limit_bytes"),
                      "cf_rating": rec.get("cf_rating"), **{f"n_{g}": n for g, n in counts.items()}},
        ))
    if skipped:
        log.warning("CodeContests %s: skipped %d of %d rows without tests", path or f"{hub_id}[{split}]",
                    skipped, total)
    return problems


def _cc_tests(value, group: str, where: str, task_id: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise DataError(f"{where}: field {group!r} of task {task_id} must be an object with 'input' and 'output'")
    inputs, outputs = value.get("input") or [], value.get("output") or []
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise DataError(f"{where}: field {group!r} of task {task_id}: 'input' and 'output' must be lists of "
                        "the same length")
    return [(as_text(i), as_text(o)) for i, o in zip(inputs, outputs)]


def _cc_python3(solutions) -> str | None:
    if not isinstance(solutions, dict):
        return None
    for language, code in zip(solutions.get("language") or [], solutions.get("solution") or []):
        if (language == CODECONTESTS_PYTHON3 or str(language).upper() == "PYTHON3") and isinstance(code, str):
            return code
    return None


def check_codecontests_args(max_tests: int | None = None, **_) -> None:
    """``load_codecontests``'s argument checks, which read no data (run by the stage checks too)."""
    if max_tests is not None and (not isinstance(max_tests, int) or max_tests < 1):
        raise ConfigError(f"max_tests must be a positive integer or None, got {max_tests!r}")


load_codecontests.check_args = check_codecontests_args
