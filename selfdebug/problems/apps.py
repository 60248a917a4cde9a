"""APPS (Hendrycks et al. 2021): standard-input problems and call-based ones (``fn_name``)."""

from __future__ import annotations

import logging
import os
import re

from selfdebug.core.errors import ConfigError
from selfdebug.execution.spec import TestSuite
from selfdebug.problems.datafiles import hub_rows
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import as_text, iter_records, json_field, required_field
from selfdebug.problems.testcode import MAX_LITERAL_CHARS, call_text, json_literal, literal, sandbox_helpers

log = logging.getLogger(__name__)

APPS_DIFFICULTIES = ("introductory", "interview", "competition")


def load_apps(path: str | os.PathLike | None = None, split: str = "train",
              difficulties: str | list[str] | tuple[str, ...] | None = None,
              hub_id: str = "codeparrot/apps") -> list[Problem]:
    """APPS rows (``problem_id, question, solutions, input_output, difficulty, starter_code``).

    From ``path`` (a JSONL/JSON export of the hub rows) or the hub (``hub_id``, ``split``). Standard-input
    problems get a ``stdio`` suite; call-based ones (``fn_name``) an ``assert`` suite calling the function
    (``Solution().<fn_name>`` when the starter code has ``class Solution``). Rows without usable tests are
    skipped, counted in a log warning. Task ids are ``APPS/<split>/<problem_id>`` (the splits reuse ids).
    """
    wanted = _difficulties(difficulties)
    rows = iter_records(path) if path is not None else hub_rows(hub_id, split)
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    total = 0
    for where, rec in rows:
        total += 1
        pid = required_field(rec, "problem_id", where)
        task_id = f"APPS/{split}/{pid}"
        question = required_field(rec, "question", where, task_id, str)
        difficulty = rec.get("difficulty")
        if wanted is not None and difficulty not in wanted:
            continue
        starter = rec.get("starter_code") or ""
        solutions = json_field(rec.get("solutions"), "solutions", where, task_id)
        if not isinstance(solutions, list):
            solutions = []
        io = json_field(rec.get("input_output"), "input_output", where, task_id)
        suite, fn_name, reason = _apps_suite(io, starter)
        if suite is None:
            skipped[reason] = skipped.get(reason, 0) + 1
            log.debug("%s: skipped APPS task %s: %s", where, task_id, reason)
            continue
        reference = next((s for s in solutions if isinstance(s, str) and s.strip()), None)
        problems.append(Problem(
            task_id=task_id, source="apps", prompt=question, tests=suite, entry_point=fn_name,
            starter_code=starter, reference=reference,
            metadata={"difficulty": difficulty, "url": rec.get("url"), "problem_id": pid,
                      "n_solutions": len(solutions), "call_based": fn_name is not None},
        ))
    if skipped:
        detail = ", ".join(f"{why}: {n}" for why, n in sorted(skipped.items()))
        log.warning("APPS %s: skipped %d of %d rows without usable tests (%s)",
                    path or f"{hub_id}[{split}]", sum(skipped.values()), total, detail)
    return problems


def _difficulties(value) -> set[str] | None:
    if value is None:
        return None
    names = {value} if isinstance(value, str) else set(value)
    unknown = sorted(names - set(APPS_DIFFICULTIES))
    if unknown:
        raise ConfigError(f"unknown APPS difficulty {', '.join(map(repr, unknown))}: expected "
                          f"{', '.join(APPS_DIFFICULTIES)}")
    return names


def _apps_suite(io, starter: str) -> tuple[TestSuite | None, str | None, str]:
    """The suite for one APPS row, the function name if call-based, and why there is none."""
    if not isinstance(io, dict):
        return None, None, "no tests"
    inputs, outputs = io.get("inputs"), io.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
        return None, None, "no tests"
    if len(inputs) != len(outputs):
        return None, None, "inputs and outputs differ in number"
    fn_name = io.get("fn_name")
    if not fn_name:
        pairs = tuple((as_text(i), as_text(o)) for i, o in zip(inputs, outputs))
        return TestSuite(kind="stdio", stdio=pairs), None, ""
    if not isinstance(fn_name, str) or not fn_name.isidentifier():
        return None, None, "bad fn_name"
    func = f"Solution().{fn_name}" if re.search(r"^\s*class\s+Solution\b", starter, re.MULTILINE) else fn_name
    asserts, in_table, out_table = [], {}, {}
    for i, (args, want) in enumerate(zip(inputs, outputs)):
        args = args if isinstance(args, list) else [args]
        call, written = call_text(func, args, i)
        if not written:
            in_table[i] = args
        want_text = literal(want)
        if want_text is None or len(want_text) > MAX_LITERAL_CHARS:
            out_table[i] = want
            expected = f"_sd_expect_at({i})"
        else:
            expected = f"_sd_expect({want_text})"
        asserts.append(f"assert {call} == {expected}")
    setup = "\n".join([
        sandbox_helpers("apps"),
        f"_sd_inputs = _sd_json.loads({json_literal(list(in_table.items()))}, object_hook=_sd_hook)",
        f"_sd_outputs = _sd_json.loads({json_literal(list(out_table.items()))}, object_hook=_sd_hook)",
        "_sd_inputs = dict(_sd_inputs)",
        "_sd_outputs = dict(_sd_outputs)",
        "",
    ])
    return TestSuite(kind="assert", asserts=tuple(asserts), setup=setup), fn_name, ""


def check_apps_args(difficulties=None, **_) -> None:
    """``load_apps``'s argument checks, which read no data (run by the stage checks too)."""
    _difficulties(difficulties)


load_apps.check_args = check_apps_args
