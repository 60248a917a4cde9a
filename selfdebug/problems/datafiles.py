"""Where the benchmark files come from: the copies packaged with selfdebug, a user's folder, or the hub.

By default a loader reads the file packaged in ``selfdebug/problems/data`` and checks it against the sha256 in
``SHA256SUMS`` beside it. ``$SELFDEBUG_DATA_DIR`` points at another folder holding files of the same names
(checked the same way). A path passed to a loader is read as it is, unchecked: it is the user's own file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from selfdebug.core.errors import DataError

DATA_DIR_ENV = "SELFDEBUG_DATA_DIR"
PACKAGED_DIR = Path(__file__).resolve().parent / "data"

_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest already checked


def data_dir() -> Path:
    """The folder the benchmark files are read from: ``$SELFDEBUG_DATA_DIR`` if set, else the packaged one."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"${DATA_DIR_ENV} is {env!r}, which is not a folder")
        return path
    return PACKAGED_DIR


def expected_digests() -> dict[str, str]:
    """File name -> sha256 from the packaged ``SHA256SUMS``."""
    sums = PACKAGED_DIR / "SHA256SUMS"
    digests = {}
    for lineno, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{sums}:{lineno}: expected '<sha256>  <file name>', got {line!r}")
        digests[parts[1]] = parts[0]
    return digests


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_file(name: str) -> Path:
    """The benchmark file ``name`` from :func:`data_dir`, after checking its sha256."""
    digests = expected_digests()
    if name not in digests:
        raise DataError(f"no packaged benchmark file named {name!r}: known files are {', '.join(sorted(digests))}")
    path = data_dir() / name
    if not path.is_file():
        where = f"${DATA_DIR_ENV} ({data_dir()})" if os.environ.get(DATA_DIR_ENV) else "the package"
        raise DataError(f"{path}: no such file in {where}; pass the file's path to the loader instead")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if _verified.get(key) != digests[name]:
        got = sha256_of(path)
        if got != digests[name]:
            raise DataError(f"{path}: sha256 is {got}, expected {digests[name]} (a damaged or different version of "
                            f"{name}; pass its path to the loader to read it anyway)")
        _verified[key] = got
    return path


def hub_rows(hub_id: str, split: str | None, config: str | None = None) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, row)`` from a Hugging Face dataset: a hub name, or a local dataset folder.

    ``split`` None reads every split in turn (the loaders then select by task id, as they do for files).
    """
    try:
        import datasets  # heavy; only for hub loading
    except ImportError:
        raise DataError(f"loading {hub_id} from the Hugging Face hub needs the `datasets` package: "
                        "pip install datasets (or selfdebug[hub])") from None
    try:
        loaded = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load"
        shown = f"{hub_id} ({config})" if config else hub_id
        raise DataError(f"could not load {shown} (split {split!r}) from the Hugging Face hub or a local dataset "
                        f"folder: {type(exc).__name__}: {exc}") from None
    parts = loaded.items() if split is None else [(split, loaded)]
    for part, rows in parts:
        for index, row in enumerate(rows):
            yield f"{hub_id}[{part}] row {index}", dict(row)
