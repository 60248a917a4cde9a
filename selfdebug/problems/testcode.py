"""Pieces of generated test code: literals for asserts, JSON tables for long arguments, and the sandbox-side
helpers (``sandbox_helpers/*.py``) a test setup starts with.

Test code produced here only runs inside the judge's child process (see ``selfdebug.execution``): helper
names there all start with ``_sd_`` so they cannot clash with a program's own names.
"""

from __future__ import annotations

import ast
import functools
import json
from importlib import resources

# Above this many characters a test's arguments are read from a table in the setup instead of being
# written out in the assert (the assert text is what a model sees when the test fails).
MAX_LITERAL_CHARS = 1000


def literal(value) -> str | None:
    """``repr(value)`` if it reads back as the same value (strictly), else None."""
    try:
        text = repr(value)
        return text if repr(ast.literal_eval(text)) == text else None
    except Exception:  # noqa: BLE001 - nan, inf, huge ints, objects: no literal
        return None


def call_text(func: str, args: list, index: int, table: str = "_sd_arg") -> tuple[str, bool]:
    """Source of ``func(*args)`` with the arguments written out when short; else ``func(*table(index))``.

    The second value says whether the arguments were written out.
    """
    parts = [literal(a) for a in args]
    if all(p is not None for p in parts):
        text = ", ".join(parts)  # type: ignore[arg-type]
        if len(text) <= MAX_LITERAL_CHARS:
            return f"{func}({text})", True
    return f"{func}(*{table}({index}))", False


def _encode(value):
    """What JSON lacks, as one-key objects: tuples ``{"__sd_tuple__": [...]}``, complex numbers
    ``{"__sd_complex__": [re, im]}`` (``_sd_hook`` decodes them)."""
    if isinstance(value, tuple):
        return {"__sd_tuple__": [_encode(v) for v in value]}
    if isinstance(value, complex):
        return {"__sd_complex__": [value.real, value.imag]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def json_literal(value) -> str:
    """A Python string literal holding ``value`` as JSON (tuples and complex numbers encoded)."""
    return repr(json.dumps(_encode(value), ensure_ascii=True, separators=(",", ":")))


@functools.cache
def _helper_source(name: str) -> str:
    """``sandbox_helpers/<name>.py`` without its header comment (the setup needs only the code)."""
    path = resources.files("selfdebug.problems.sandbox_helpers").joinpath(f"{name}.py")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines).rstrip("\n") + "\n"


def sandbox_helpers(name: str) -> str:
    """The helper code a ``name`` (``apps``, ``evalplus``) test setup starts with: the shared ``data``
    helpers (argument tables, the expected-value wrapper), then the data set's own."""
    return _helper_source("data") + "\n\n" + _helper_source(name)
