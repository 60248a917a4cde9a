"""The benchmark registry: every loader by name, and the task-id / limit selection the configs use."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable

from selfdebug.core.errors import ConfigError
from selfdebug.problems.apps import load_apps
from selfdebug.problems.codecontests import load_codecontests
from selfdebug.problems.evalplus import load_evalplus
from selfdebug.problems.humaneval import load_humaneval
from selfdebug.problems.humanevalpack import load_humanevalpack
from selfdebug.problems.mbpp import load_mbpp
from selfdebug.problems.problem import Problem

_REGISTRY: dict[str, tuple[Callable[..., list[Problem]], dict]] = {
    "humaneval": (load_humaneval, {}),
    "humanevalfix": (load_humanevalpack, {}),
    "mbpp": (load_mbpp, {"sanitized": False}),
    "mbpp_sanitized": (load_mbpp, {"sanitized": True}),
    "mbpp_plus": (load_evalplus, {"name": "mbpp_plus"}),
    "humaneval_plus": (load_evalplus, {"name": "humaneval_plus"}),
    "apps": (load_apps, {}),
    "codecontests": (load_codecontests, {}),
}
BENCHMARKS: tuple[str, ...] = tuple(_REGISTRY)
_ALIASES = {"human_eval": "humaneval", "mbpp+": "mbpp_plus", "humaneval+": "humaneval_plus",
            "code_contests": "codecontests", "sanitized_mbpp": "mbpp_sanitized",
            "humanevalpack": "humanevalfix", "humaneval_fix": "humanevalfix"}


def load_benchmark(name: str, *, limit: int | None = None, task_ids: Iterable[str] | None = None,
                   **kwargs) -> list[Problem]:
    """Load a benchmark by registry name (see ``BENCHMARKS``), then keep ``task_ids`` and the first ``limit``.

    ``kwargs`` go to the loader (``path``, ``split``, ...); an unknown name or option raises ``ConfigError``.
    """
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}: expected one of {', '.join(BENCHMARKS)}")
    loader, fixed = _REGISTRY[key]
    unknown, allowed = unknown_options(loader, kwargs, fixed)
    if unknown:
        raise ConfigError(f"benchmark {key!r} has no option {', '.join(map(repr, unknown))}: its options are "
                          f"{', '.join(allowed)}")
    problems = loader(**fixed, **kwargs)
    return select_problems(problems, limit=limit, task_ids=task_ids)


def select_problems(problems: list[Problem], *, limit: int | None = None,
                    task_ids: Iterable[str] | None = None) -> list[Problem]:
    """Keep the problems named in ``task_ids`` (in the given order), then the first ``limit``."""
    if task_ids is not None:
        if isinstance(task_ids, str):
            task_ids = [task_ids]
        by_id = {p.task_id: p for p in problems}
        wanted = list(dict.fromkeys(str(t) for t in task_ids))  # a config list may hold numbers
        missing = [t for t in wanted if t not in by_id]
        if missing:
            shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            example = f" (its ids look like {problems[0].task_id!r})" if problems else ""
            raise ConfigError(f"task_ids: no problem {shown} in this benchmark{example}")
        problems = [by_id[t] for t in wanted]
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
        problems = problems[:limit]
    return list(problems)


def unknown_options(loader: Callable, given: Iterable[str], fixed: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``(unknown, allowed)``: the names in ``given`` that ``loader`` takes no parameter for (none when it takes
    ``**kwargs``), and the parameters a caller may set (less ``fixed``)."""
    params, fixed = inspect.signature(loader).parameters, set(fixed)
    allowed = [p for p, spec in params.items() if p not in fixed and spec.kind != spec.VAR_KEYWORD]
    if any(spec.kind == spec.VAR_KEYWORD for spec in params.values()):
        return [], allowed
    return sorted(set(given) - set(allowed)), allowed


def check_loader(loader_cfg, key: str) -> None:
    """A Hydra loader block (``_target_`` and its arguments) checked without reading any data: the target
    imports, it takes every argument given, and a loader with a ``check_args`` companion (``load_mbpp_mutants``)
    has the values vetted by it. Hydra's instantiate finds such mistakes only when the stage loads its data: in
    a pipeline, after the stages before it have run."""
    from omegaconf import OmegaConf

    target = loader_cfg.get("_target_")
    if target is None:
        return
    module, _, name = str(target).rpartition(".")
    try:
        loader = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{key}._target_ = {target!r} cannot be imported: {exc}") from None
    args = {k: v for k, v in OmegaConf.to_container(loader_cfg, resolve=True).items() if not k.startswith("_")}
    unknown, allowed = unknown_options(loader, args)
    if unknown:
        raise ConfigError(f"{key}: {target} has no option {', '.join(map(repr, unknown))}; its options are "
                          f"{', '.join(allowed)}")
    check_args = getattr(loader, "check_args", None)
    if check_args is not None:
        try:
            check_args(**args)
        except (TypeError, ValueError, ConfigError) as exc:
            message = str(exc)  # the mutants' messages name their key already (benchmark.loader.split = ...)
            raise ConfigError(message if message.startswith(key) else f"{key}: {message}") from None


def check_loaders(blocks: dict) -> None:
    """``check_loader`` on each ``{config key: loader block}``."""
    for key, block in blocks.items():
        check_loader(block, key)


def loader_paths(blocks: dict) -> dict[str, str]:
    """``{"<key>.path": path}`` of the loader blocks that name a file of their own (``path`` set)."""
    return {f"{key}.path": str(block.path) for key, block in blocks.items() if block.get("path") is not None}
