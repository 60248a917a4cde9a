"""Reading the analysis commands' Hydra settings, with errors that name the key and show a valid value."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from selfdebug.core.cli import user_errors
from selfdebug.core.errors import ConfigError


def run_command(run: Callable[[DictConfig], object], cfg: DictConfig) -> None:
    """Run an analysis command: bad input ends it with one ``error:`` line on stderr and exit status 2.

    The configs leave Python's logging alone (``hydra/job_logging: none``); selfdebug's warnings go to stderr
    as plain lines, its errors only through ``user_errors`` (which prints them itself).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(lambda record: record.levelno < logging.ERROR)
    logging.getLogger("selfdebug").addHandler(handler)
    with user_errors():
        run(cfg)


def text(cfg: DictConfig, key: str, example: str) -> str:
    """A required setting as text; ``example`` is a valid override, shown when it is missing."""
    value = cfg.get(key)
    if value is None or isinstance(value, (DictConfig, ListConfig)) or str(value).strip() == "":
        raise ConfigError(f"{key}: required, e.g. {example}")
    return str(value)


def text_list(cfg: DictConfig, key: str) -> list[str]:
    """A list setting; one value (``runs=DIR``) counts as a list of one, null as an empty list."""
    value = cfg.get(key)
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (ListConfig, Sequence)) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{key}={value!r}: expected a value or a list of values, e.g. '{key}=[a,b]'")


def paths(cfg: DictConfig, key: str) -> list[Path]:
    return [Path(v) for v in text_list(cfg, key)]


def optional_path(cfg: DictConfig, key: str) -> Path | None:
    value = cfg.get(key)
    return None if value is None else Path(str(value))


def integer(cfg: DictConfig, key: str, minimum: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{key}={value!r}: not an integer")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r}: not an integer") from None
    if number < minimum:
        raise ConfigError(f"{key}={number}: it must be at least {minimum}")
    return number


def fraction(cfg: DictConfig, key: str) -> float:
    """A number strictly between 0 and 1 (a confidence level)."""
    value = cfg.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: not a number") from None
    if isinstance(value, bool) or not 0.0 < number < 1.0:
        raise ConfigError(f"{key}={value!r}: it must lie strictly between 0 and 1")
    return number
