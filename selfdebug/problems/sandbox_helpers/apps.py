# Sandbox side, APPS call-based problems: ``assert f(...) == _sd_expect(<output>)``.
# Inserted (this header dropped) after data.py; see __init__.py.
# ruff: noqa: F821 - _SdExpected, _sd_copymod and _sd_outputs come from data.py and the setup

def _sd_plain(x):
    if isinstance(x, (list, tuple)):
        return [_sd_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _sd_plain(v) for k, v in x.items()}
    return x


def _sd_matches(got, want):
    """An APPS expected output: tuples count as lists, and a one-element list also matches its element."""
    got = _sd_plain(got)
    try:
        if got == want:
            return True
        return isinstance(want, list) and len(want) == 1 and got == want[0]
    except Exception:  # noqa: BLE001 - a program's output may raise anything on ==
        return False


def _sd_expect(value):
    return _SdExpected(value)


def _sd_expect_at(i):
    return _SdExpected(_sd_copymod.deepcopy(_sd_outputs[i]))
