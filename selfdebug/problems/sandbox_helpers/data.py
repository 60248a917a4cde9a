# Sandbox side, shared: argument tables decoded from JSON and the wrapper that compares outputs.
# Inserted (this header dropped) at the top of APPS and EvalPlus test setups; see __init__.py.
# ruff: noqa: F821, F401 - the rest of the setup defines _sd_inputs and _sd_matches, and uses _sd_json

import copy as _sd_copymod
import json as _sd_json


def _sd_hook(d):
    if len(d) == 1:
        if "__sd_tuple__" in d:
            return tuple(d["__sd_tuple__"])
        if "__sd_complex__" in d:
            return complex(*d["__sd_complex__"])
    return d


def _sd_arg(i):
    return _sd_copymod.deepcopy(_sd_inputs[i])


class _SdExpected:
    """An expected output; ``==`` against it asks the data set's ``_sd_matches(got, want)``."""

    __slots__ = ("value",)
    __hash__ = None

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return _sd_matches(other, self.value)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return repr(self.value)
