"""EvalPlus files (MBPP+, HumanEval+): each input is one test comparing the program with the canonical
solution, run in the judge's child (``sandbox_helpers/evalplus.py``)."""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.execution.spec import TestSuite
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import dataset_records, required_field, required_strings
from selfdebug.problems.testcode import call_text, json_literal, sandbox_helpers


def load_evalplus(path: str | os.PathLike | None = None, name: str = "mbpp_plus", use_plus_inputs: bool = True,
                  retype_inputs: bool = True, hub_id: str | None = None, hub_split: str = "test") -> list[Problem]:
    """An EvalPlus-format file (MBPP+ or HumanEval+; ``.jsonl`` or ``.jsonl.gz``).

    Each input (``base_input``, then ``plus_input`` when ``use_plus_inputs``) is one test comparing the
    program's output with the canonical solution's, computed in the judge's child: the setup runs the
    canonical solution in a private namespace. Floats compare within ``atol`` (when 0: relative and
    absolute 1e-6). ``name`` is the problem source (``mbpp_plus``/``humaneval_plus``); ``path`` defaults to
    the packaged MBPP+ snapshot for ``mbpp_plus``; ``hub_id`` (e.g. ``evalplus/mbppplus``, split ``hub_split``)
    reads a Hugging Face dataset instead.

    JSON has no tuples or complex numbers, so inputs come as lists and strings; with ``retype_inputs``
    the argument types of the task's example asserts (``assertion``) are restored (see
    :func:`_retype_inputs`), so programs see the types the prompt promises. Where the example asserts
    compare ``set(f(...))``, the order of the output is ignored. A regex match object compares by
    whether there is a match. Tests are written ``assert f(<args>) == _sd_want(i)`` so a failed test
    shows the arguments (and the judge's "actual output" note works); long arguments come from a table.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"load_evalplus: name must be a non-empty string, got {name!r}")
    if path is None and hub_id is None and name != "mbpp_plus":
        raise ConfigError(f"{name}: pass path= to an EvalPlus-format .jsonl(.gz) file, or hub_id= a hub dataset")
    problems = []
    for where, rec in dataset_records(path, hub_id, None, hub_split, "MbppPlus-dev-2023-11.jsonl.gz"):
        task_id = str(required_field(rec, "task_id", where))
        prompt, entry, solution = required_strings(rec, where, task_id, "prompt", "entry_point", "canonical_solution")
        inputs = list(_inputs(rec, "base_input", where, task_id, required=True))
        n_base = len(inputs)
        if use_plus_inputs:
            inputs += _inputs(rec, "plus_input", where, task_id, required=False)
        if not inputs:
            raise DataError(f"{where}: task {task_id} has no tests (no inputs)")
        try:
            atol = float(rec.get("atol") or 0)
        except (TypeError, ValueError):
            raise DataError(f"{where}: field 'atol' of task {task_id} is not a number") from None
        defines = re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", solution, re.MULTILINE) is not None
        reference = solution if defines else prompt + solution
        assertion = rec.get("assertion") or ""
        examples = _example_calls(assertion, entry)
        if retype_inputs and examples:
            inputs = _retype_inputs(inputs, examples[0])
        unordered = bool(assertion) and re.search(rf"\b(set|sorted)\(\s*{re.escape(entry)}\(", assertion) is not None
        setup = "\n".join([
            sandbox_helpers("evalplus"),
            f"_sd_atol = {atol!r}",
            f"_sd_unordered = {unordered!r}",
            f"_sd_ref_src = {reference!r}",
            "_sd_ref_ns = {'__name__': '_sd_reference'}",
            "exec(compile(_sd_ref_src, '<reference>', 'exec'), _sd_ref_ns)",
            f"_sd_ref = _sd_ref_ns[{entry!r}]",
            f"_sd_inputs_json = {json_literal(inputs)}",
            "_sd_inputs = _sd_json.loads(_sd_inputs_json, object_hook=_sd_hook)",
            "",
        ])
        asserts = tuple(f"assert {call_text(entry, args, i)[0]} == _sd_want({i})" for i, args in enumerate(inputs))
        humaneval_style = re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", prompt, re.MULTILINE) is not None
        if humaneval_style:
            text, starter, shown = prompt, prompt, ()
        else:
            text, shown = _docstring_task(prompt)
            starter = ""
            if not shown:
                shown = tuple(_assert_lines(assertion))[:1]
        problems.append(Problem(
            task_id=task_id, source=name, prompt=text, tests=TestSuite(kind="assert", asserts=asserts, setup=setup),
            entry_point=entry, starter_code=starter, reference=reference, tests_shown=shown,
            metadata={"n_base_tests": n_base, "atol": atol, "unordered_output": unordered,
                      "raw_prompt": prompt, "contract": rec.get("contract") or "",
                      "base_asserts": tuple(_assert_lines(assertion))},
        ))
    return problems


def _inputs(rec: dict, name: str, where: str, task_id: str, required: bool) -> list[list]:
    value = rec.get(name)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field {name!r} (task {task_id})")
        return []
    if isinstance(value, str):  # some exports keep inputs as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: field {name!r} of task {task_id} is not valid JSON: {exc.msg}") from None
    if value in ({}, ""):  # an empty input set is sometimes written as {}
        return []
    if not isinstance(value, list) or not all(isinstance(args, list) for args in value):
        raise DataError(f"{where}: field {name!r} of task {task_id} must be a list of argument lists")
    return value


def _assert_lines(source: str) -> Iterator[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in tree.body:
        if isinstance(node, ast.Assert):
            yield ast.get_source_segment(source, node) or ast.unparse(node)


def _example_calls(assertion: str, entry: str) -> list[list]:
    """Literal argument lists of the calls to ``entry`` in the example asserts."""
    try:
        tree = ast.parse(assertion)
    except SyntaxError:
        return []
    found = []
    for stmt in tree.body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry \
                    and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
                try:
                    found.append([ast.literal_eval(a) for a in node.args])
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    pass
                break
    return found


def _retype_inputs(inputs: list[list], example: list) -> list[list]:
    """Restore the argument types of ``example`` (a literal argument list from the task's asserts).

    Sequences become tuples where the example has tuples, at any depth. An argument the example gives
    as a number, and that every input gives as a number or a numeric string, becomes a number (JSON has
    no complex numbers, so EvalPlus writes them as strings like ``"(1+2j)"``).
    """
    inputs = [[_retype(a, example[i]) if i < len(example) else a for i, a in enumerate(args)] for args in inputs]
    for k, ex in enumerate(example):
        column = [args[k] for args in inputs if k < len(args)]
        if not _is_number(ex) or not any(isinstance(v, str) for v in column):
            continue
        parsed = [_parse_number(v) if isinstance(v, str) else v for v in column]
        if all(_is_number(v) for v in parsed):
            inputs = [[_parse_number(a) if i == k and isinstance(a, str) else a for i, a in enumerate(args)]
                      for args in inputs]
    return inputs


def _retype(value, example):
    """``value`` (decoded JSON) with the container types of ``example`` (a literal) restored."""
    if isinstance(value, list):
        if isinstance(example, (list, tuple)):
            items = [_retype(v, _element_example(example, i, v)) for i, v in enumerate(value)]
            return tuple(items) if isinstance(example, tuple) else items
        if isinstance(example, dict) and not value:
            return {}  # JSON writers sometimes turn an empty dict into []
        return value
    if isinstance(value, dict) and isinstance(example, dict):
        return {k: _retype(v, example[k] if k in example else _element_example(list(example.values()), -1, v))
                for k, v in value.items()}
    return value


def _is_number(x) -> bool:
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def _parse_number(text: str):
    """``text`` as an int, float or complex number if it is one (with at least one digit), else itself."""
    if not any(c.isdigit() for c in text):
        return text
    for kind in (int, float, complex):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return text


def _element_example(example, index: int, value):
    """The example element to model ``value`` (a container inside a container modelled on ``example``) on:
    the element at the same position if it is a container, else the first container of the same family
    (sequence or dict); else, for a sequence nested deeper than the example goes, the example itself (a
    tuple of tuples stays tuples all the way down)."""
    if not isinstance(value, (list, dict)):
        return None
    family = (list, tuple, dict) if isinstance(value, list) else (dict,)
    if 0 <= index < len(example) and isinstance(example[index], family):
        return example[index]
    found = next((e for e in example if isinstance(e, family)), None)
    if found is None and isinstance(value, list) and isinstance(example, (list, tuple)):
        return example
    return found


def _docstring_task(prompt: str) -> tuple[str, tuple[str, ...]]:
    """MBPP+'s prompt (a docstring, maybe with one assert) as task text and shown asserts."""
    text = prompt.strip()
    for quote in ('"""', "'''"):
        if text.startswith(quote) and text.endswith(quote) and len(text) >= 6:
            text = text[3:-3]
            break
    lines, shown = [], []
    for line in text.strip().splitlines():
        (shown if line.lstrip().startswith("assert ") else lines).append(line)
    return "\n".join(lines).strip(), tuple(s.strip() for s in shown)
