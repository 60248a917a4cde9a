# Sandbox side, EvalPlus (MBPP+, HumanEval+): ``assert f(...) == _sd_want(i)``, the reference's output.
# Inserted (this header dropped) after data.py; see __init__.py.
# ruff: noqa: F821 - _SdExpected, _sd_arg, _sd_atol, _sd_unordered and _sd_ref come from data.py and the setup

import math as _sd_math
import numbers as _sd_numbers
import re as _sd_re


def _sd_close(got, want):
    if got != got and want != want:  # noqa: PLR0124 - both nan
        return True
    try:
        if got == want:
            return True
        if _sd_atol:
            return abs(got - want) <= _sd_atol + 1e-7 * abs(want)
        return _sd_math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)
    except (OverflowError, TypeError, ValueError):
        return False


def _sd_same(got, want):
    """Equality for expected outputs: floats within tolerance, nan == nan, list == tuple elementwise;
    a regex match object only needs a match (or no match) on the other side."""
    if isinstance(got, _sd_re.Match) or isinstance(want, _sd_re.Match):
        return bool(got) == bool(want)
    if isinstance(got, float) or isinstance(want, float):
        if isinstance(got, _sd_numbers.Real) and isinstance(want, _sd_numbers.Real):
            return _sd_close(got, want)
        return False
    if isinstance(want, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(want)
                and all(_sd_same(g, w) for g, w in zip(got, want)))
    if isinstance(want, dict):
        return (isinstance(got, dict) and len(got) == len(want) and all(k in got for k in want)
                and all(_sd_same(got[k], want[k]) for k in want))
    try:
        return bool(got == want)
    except Exception:  # noqa: BLE001 - a program's output may raise anything on ==
        return False


def _sd_matches(got, want):
    """``_sd_same``, or equal as sets when the task's asserts ignore the output's order."""
    if _sd_unordered and isinstance(got, (list, tuple, set, frozenset)) \
            and isinstance(want, (list, tuple, set, frozenset)):
        try:
            return set(got) == set(want)
        except TypeError:
            pass
    return _sd_same(got, want)


def _sd_want(i):
    return _SdExpected(_sd_ref(*_sd_arg(i)))
