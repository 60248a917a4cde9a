"""One exception type for bad input: entry points print its message and exit non-zero."""

from __future__ import annotations


class SelfDebugError(Exception):
    """A user-facing error: the message says what was wrong, where, and what to do."""


class ConfigError(SelfDebugError):
    """A config key holds a value that cannot work; the message names the key."""


class DataError(SelfDebugError):
    """A data file is malformed; the message names the file and line."""
