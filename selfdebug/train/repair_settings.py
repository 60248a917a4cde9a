"""The ``sft.repair_eval`` / ``rl.repair_eval`` settings block (the callback is ``selfdebug.train.repair_eval``).

Kept apart from the callback so the settings modules import no Lightning or training code."""

from __future__ import annotations

from dataclasses import dataclass, fields

from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import MODES
from selfdebug.execution.time_limits import check_time_limit_keys
from selfdebug.problems.mbpp import HELD_OUT_SPLITS


@dataclass
class RepairEvalSettings:
    """The ``sft.repair_eval`` / ``rl.repair_eval`` block."""

    every: int = 0  # evaluate every N steps (and at step 0 and the last step); 0: never (the default)
    split: str = "test"  # the MBPP split the mutants come from: test (11-510, what the report's benchmark uses)
    #                      or validation (511-600: a development set to tune on without touching test)
    limit: int = 64  # MBPP tasks of the split the mutants come from (one mutant each; a few tasks give none)
    max_new_tokens: int = 64  # greedy answer length
    mode: str = "explain_refine"  # the refinement prompt: explain_refine or refine
    batch_size: int = 8  # prompts per generate call (left-padded)
    max_prompt_length: int = 1024  # longer prompts are left out of the set (counted in each row)
    timeout_factor: float | None = 10.0  # each program's time limit: factor x its reference's run time, measured
    min_timeout: float = 2.0  # when the set is built; at least min_timeout s, at most sandbox.timeout (null: flat)


def repair_eval_settings(value, key: str) -> RepairEvalSettings:
    """The block as its dataclass (from a mapping or an instance), every range checked; errors name ``key``."""
    if isinstance(value, RepairEvalSettings):
        value = {f.name: getattr(value, f.name) for f in fields(RepairEvalSettings)}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} = {value!r}; it must be a block of settings (every, limit, max_new_tokens, mode)")
    unknown = sorted(set(value) - {f.name for f in fields(RepairEvalSettings)})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: no such setting (see selfdebug.train.repair_settings.RepairEvalSettings)")
    s = RepairEvalSettings(**value)
    for name, low in (("every", 0), ("limit", 1), ("max_new_tokens", 1), ("batch_size", 1), ("max_prompt_length", 1)):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{key}.{name} = {v!r}; it must be an integer >= {low}")
    check_time_limit_keys(s.timeout_factor, s.min_timeout, prefix=f"{key}.")
    if s.split not in HELD_OUT_SPLITS:
        raise ConfigError(f"{key}.split = {s.split!r}; choose one of {list(HELD_OUT_SPLITS)} (training data comes "
                          "from MBPP train)")
    if s.mode not in MODES:
        raise ConfigError(f"{key}.mode = {s.mode!r}; choose one of {list(MODES)}")
    return s
