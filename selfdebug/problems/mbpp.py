"""MBPP, the full release (JSON lines) and the sanitized subset (a JSON array)."""

from __future__ import annotations

import ast
import builtins
import math
import os

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.execution.spec import TestSuite
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import dataset_records, required_field, string_list, unix_newlines

# MBPP's customary split by task id (Austin et al. 2021): few-shot prompt, test, validation, train.
MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
# The splits no training data comes from: the held-out repair benchmarks draw their bugs from these.
HELD_OUT_SPLITS = ("test", "validation")


def load_mbpp(path: str | os.PathLike | None = None, split: str = "test", sanitized: bool | None = None,
              include_challenge_tests: bool = False, hub_id: str | None = None,
              hub_config: str | None = None) -> list[Problem]:
    """MBPP, full release (JSONL) or the sanitized subset (JSON array).

    ``split``: ``prompt`` (task ids 1-10), ``test`` (11-510), ``validation`` (511-600), ``train``
    (601-974) or ``all``. ``sanitized``: None tells the format from the records (``text`` vs ``prompt``);
    True/False insists on one. ``path`` defaults to the packaged ``mbpp.jsonl`` / ``sanitized-mbpp.json``
    (see :func:`data_dir`); ``hub_id`` (e.g. ``google-research-datasets/mbpp``, ``hub_config`` ``full`` or
    ``sanitized``) reads every split of a Hugging Face dataset instead, selected by task id as for the file.
    ``include_challenge_tests`` adds the full release's extra tests to the suite (never shown in the prompt).
    """
    check_mbpp_args(split=split)
    low, high = MBPP_SPLITS.get(split, (-math.inf, math.inf))
    problems = []
    for where, rec in dataset_records(path, hub_id, hub_config, None,
                               "sanitized-mbpp.json" if sanitized else "mbpp.jsonl"):
        is_sanitized = sanitized if sanitized is not None else ("text" not in rec and "prompt" in rec)
        raw_id = required_field(rec, "task_id", where)
        try:
            number = int(raw_id)
        except (TypeError, ValueError):
            raise DataError(f"{where}: task_id {raw_id!r} is not a number") from None
        if not low <= number <= high:
            continue
        if is_sanitized:
            task_id = f"MBPP-sanitized/{number}"
            text = required_field(rec, "prompt", where, task_id, str)
            imports = string_list(rec.get("test_imports") or [], "test_imports", where, task_id)
            setup = "\n".join(imports)
            challenge: list[str] = []
        else:
            task_id = f"MBPP/{number}"
            text = required_field(rec, "text", where, task_id, str)
            setup = unix_newlines(rec.get("test_setup_code") or "")
            challenge = string_list(rec.get("challenge_test_list") or [], "challenge_test_list", where, task_id)
        listed = string_list(required_field(rec, "test_list", where, task_id), "test_list", where, task_id)
        tests = [unix_newlines(t) for t in listed]
        if not tests:
            raise DataError(f"{where}: task {task_id} has no tests (empty 'test_list')")
        code = rec.get("code")
        code = unix_newlines(code) if isinstance(code, str) else None
        asserts = tests + ([unix_newlines(t) for t in challenge] if include_challenge_tests else [])
        problems.append(Problem(
            task_id=task_id, source="mbpp_sanitized" if is_sanitized else "mbpp", prompt=text,
            tests=TestSuite(kind="assert", asserts=tuple(asserts), setup=setup),
            entry_point=_called_function(tests[0], code), reference=code, tests_shown=tuple(tests),
            metadata={"mbpp_task_id": number, "split": _mbpp_split_of(number)},
        ))
    return problems


def _mbpp_split_of(number: int) -> str | None:
    return next((name for name, (lo, hi) in MBPP_SPLITS.items() if lo <= number <= hi), None)


def _called_function(test: str, code: str | None) -> str | None:
    """The function a test calls: one the reference defines if any, else the first non-builtin call."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    called = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    defined: set[str] = set()
    if code:
        try:
            defined = {n.name for n in ast.parse(code).body
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        except SyntaxError:
            pass
    for name in called:
        if name in defined:
            return name
    return next((name for name in called if not hasattr(builtins, name)), None)


def check_mbpp_args(split: str = "test", **_) -> None:
    """``load_mbpp``'s argument checks, which read no data (the stage checks run them before any stage starts)."""
    if split != "all" and split not in MBPP_SPLITS:
        raise ConfigError(f"unknown MBPP split {split!r}: expected one of {', '.join([*MBPP_SPLITS, 'all'])}")


load_mbpp.check_args = check_mbpp_args
