"""Per-problem time limits scaled from the reference's own run time.

A flat limit is too short for a few problems (MBPP task 123 needs about 6.5 s on 2 cores) and too long for
the rest: every infinite loop a model writes holds a sandbox worker for the whole limit. So a program may
run ``factor`` times as long as its problem's reference, at least ``floor`` seconds and at most the
sandbox's own ``timeout``. Collection and evaluation use the same rule.
"""

from __future__ import annotations

from selfdebug.core.errors import ConfigError


def time_limit(reference_seconds: float, factor: float, floor: float, cap: float) -> float:
    """The limit for a problem whose reference ran in ``reference_seconds``."""
    return round(min(cap, max(floor, factor * reference_seconds)), 3)


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_time_limit_keys(factor: float | None, floor: float, prefix: str = "") -> None:
    """``factor`` (null: the flat sandbox timeout for every program) and ``floor`` must be positive numbers."""
    if factor is not None and not _positive_number(factor):
        raise ConfigError(f"{prefix}timeout_factor = {factor!r}; it must be a positive multiple of the "
                          f"reference's run time, or null for the flat sandbox.timeout")
    if not _positive_number(floor):
        raise ConfigError(f"{prefix}min_timeout = {floor!r}; it must be a positive number of seconds")


def limits_from_runs(with_ref, results, factor: float, floor: float, cap: float) -> dict[str, float]:
    """``{task_id: seconds}`` from the verdicts of the problems' references; a failed reference gives none."""
    return {p.task_id: time_limit(r.duration, factor, floor, cap) for p, r in zip(with_ref, results) if r.passed}


def reference_time_limits(problems, sandbox, factor: float, floor: float,
                          progress: bool | str = False) -> dict[str, float]:
    """``{task_id: seconds}`` for each problem whose reference passes its tests; the others are absent (they
    keep the sandbox's timeout). References run under the sandbox's timeout, so a slow one is measured, not cut."""
    with_ref = [p for p in problems if p.reference]
    results = sandbox.run_batch([(p.reference, p.tests) for p in with_ref], progress=progress)
    return limits_from_runs(with_ref, results, factor, floor, sandbox.config.timeout)
