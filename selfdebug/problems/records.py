"""Reading data set records: local files (``.jsonl``, ``.jsonl.gz``, a ``.json`` array) or the hub, and
checking their fields.

Bad input raises ``DataError`` whose message names the file and 1-based line (or the record / task id).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.problems.datafiles import data_file, hub_rows


def _open_text(path: Path):
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None


def iter_records(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, record)`` from a ``.jsonl``, ``.jsonl.gz`` or ``.json`` (array) file.

    The format is told by content (gzip magic; a leading ``[`` means one JSON array), not by the name.
    ``where`` is ``"file:line"`` for JSON lines and ``"file: record N"`` for an array, for error messages.
    """
    path = Path(path)
    fh = _open_text(path)
    lineno = 0
    seen = False
    try:
        with fh:
            for line in fh:
                lineno += 1
                if not line.strip():
                    continue
                if not seen and line.lstrip().startswith("["):  # the whole file is one JSON array
                    yield from _array_records(path, line + fh.read(), lineno)
                    return
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
                seen = True
                yield where, _json_object(record, where)
    except UnicodeDecodeError:
        raise DataError(f"{path}:{lineno + 1}: not UTF-8 text") from None
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt gzip file
        raise DataError(f"{path}: cannot read: {exc}") from None


def _array_records(path: Path, text: str, first_line: int) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{first_line - 1 + exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records")
    for index, record in enumerate(data, 1):
        where = f"{path}: record {index}"
        yield where, _json_object(record, where)


def _json_object(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def dataset_records(path, hub_id: str | None, hub_config: str | None, hub_split: str | None,
                    packaged: str) -> Iterator[tuple[str, dict]]:
    """Records from the user's ``path``, else the hub dataset ``hub_id``, else the packaged file ``packaged``."""
    if path is not None and hub_id is not None:
        raise ConfigError(f"pass path= or hub_id=, not both (path={str(path)!r}, hub_id={hub_id!r})")
    if path is not None:
        return iter_records(path)
    if hub_id is not None:
        return hub_rows(hub_id, hub_split, hub_config)
    return iter_records(data_file(packaged))


def required_field(record: dict, name: str, where: str, task: object = None, kind: type | None = None):
    """``record[name]``; a ``DataError`` naming the field if it is missing (or null, or not a ``kind``)."""
    value = record.get(name)
    tail = f" (task {task})" if task is not None else ""
    if value is None:
        raise DataError(f"{where}: missing field {name!r}{tail}")
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"{where}: field {name!r}{tail} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def required_strings(record: dict, where: str, task: object, *names: str) -> list[str]:
    """``required_field(record, name, where, task, str)`` for each of ``names``, in order."""
    return [required_field(record, name, where, task, str) for name in names]


def string_list(value, name: str, where: str, task: object) -> list[str]:
    """``value`` if it is a list of strings, else a ``DataError`` naming the field."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field {name!r} of task {task} must be a list of strings")
    return value


def unix_newlines(text: str) -> str:
    """``text`` with Windows line ends made ``\\n`` (some MBPP fields have them)."""
    return text.replace("\r\n", "\n")


def json_field(value, name: str, where: str, task_id: str):
    """A field the hub stores as a JSON string (decoded); already-decoded values pass through."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: field {name!r} of task {task_id} is not valid JSON: {exc.msg}") from None
    return value


def as_text(value) -> str:
    """A test's input or output as text: a list of lines joined (ending in a newline), else ``str``."""
    if isinstance(value, list):
        text = "\n".join(as_text(v) for v in value)
        return text if text.endswith("\n") else text + "\n"
    return value if isinstance(value, str) else str(value)
