"""Verified references per wrong program, built from collected trajectory records.

A refinement is verified when its verdict is ``correct`` (it passed every test). An explanation is verified when
a correct refinement follows it in the same record (refine-only records have an empty explanation and give
none). Both sets are keyed by the record's ``wrong_id``, deduplicated, in record order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from selfdebug.core.errors import DataError
from selfdebug.problems import iter_records as read_lines  # the one JSON-lines reader

REQUIRED_FIELDS = ("wrong_id", "explanation", "refinement", "verdict")


def record_files(path: str | Path) -> list[Path]:
    """The JSONL files of a dataset: a file itself, ``<dir>/trajectories/*.jsonl`` (a collection's output
    folder) or ``<dir>/*.jsonl``."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such trajectory file or dataset folder (a collection writes one: "
                        f"python -m selfdebug.collect)")
    folder = path / "trajectories" if (path / "trajectories").is_dir() else path
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataError(f"{folder}: holds no *.jsonl trajectory shards")
    return files


def iter_records(path: str | Path) -> Iterator[dict]:
    """Records of every shard of ``path`` in order, each with ``_where`` = ``"file:line"`` added (for error
    messages); a malformed line is a DataError naming file and line."""
    for file in record_files(path):
        for where, record in read_lines(file):
            record.setdefault("_where", where)
            yield record


@dataclass
class ReferenceIndex:
    """``wrong_id`` -> verified refinements and verified explanations."""

    refinements: dict[str, list[str]] = field(default_factory=dict)
    explanations: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> ReferenceIndex:
        refinements: dict[str, dict[str, None]] = {}
        explanations: dict[str, dict[str, None]] = {}
        for i, r in enumerate(records):
            missing = [k for k in REQUIRED_FIELDS if k not in r]
            if missing:
                where = r.get("_where", f"record {i}")
                raise DataError(f"{where}: trajectory record lacks {missing} (see selfdebug/collection.py:"
                                f"RECORD_FIELDS)")
            if r["verdict"] != "correct":
                continue
            wid = str(r["wrong_id"])
            program = r["refinement"] or ""
            if program.strip():
                refinements.setdefault(wid, {})[program] = None
            explanation = (r["explanation"] or "").strip()
            if explanation:
                explanations.setdefault(wid, {})[explanation] = None
        return cls({k: list(v) for k, v in refinements.items()}, {k: list(v) for k, v in explanations.items()})

    @classmethod
    def from_path(cls, path: str | Path) -> ReferenceIndex:
        """From a JSONL file or a dataset folder (see :func:`record_files`)."""
        return cls.from_records(iter_records(path))

    def refinements_for(self, wrong_id: str) -> list[str]:
        return self.refinements.get(str(wrong_id), [])

    def explanations_for(self, wrong_id: str) -> list[str]:
        return self.explanations.get(str(wrong_id), [])

    def __contains__(self, wrong_id: object) -> bool:
        return str(wrong_id) in self.refinements

    def __len__(self) -> int:
        """Wrong programs with at least one verified refinement."""
        return len(self.refinements)

    def stats(self) -> dict:
        return {"wrong_with_refinement": len(self.refinements),
                "wrong_with_explanation": len(self.explanations),
                "verified_refinements": sum(map(len, self.refinements.values())),
                "verified_explanations": sum(map(len, self.explanations.values()))}


def build_references(records_or_path: Iterable[dict] | str | Path) -> ReferenceIndex:
    """A :class:`ReferenceIndex` from records in memory, a JSONL file, or a dataset folder."""
    if isinstance(records_or_path, (str, Path)):
        return ReferenceIndex.from_path(records_or_path)
    return ReferenceIndex.from_records(records_or_path)
