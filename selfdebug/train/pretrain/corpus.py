"""The pretraining corpus: functions and classes cut out of Python source files with ``ast``.

    files = source_files(None)                     # this interpreter's standard library (no site-packages)
    units, counts = extract_units(files)           # one Unit per top-level function / class (or method)
    units, matches = decontaminate(units, benchmark_problems())

A unit is the dedented source of one definition (decorators and docstring included, comments kept): the
model learns whole definitions, and the repair pairs are made from the same units. A class longer than
``max_chars`` is split into its methods; a longer function is dropped. Files that do not parse under this
interpreter (the stdlib ships a few Python 2 examples) are skipped and counted.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sysconfig
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

from selfdebug.core.errors import ConfigError

# Folders never read: installed third-party code, caches, and (unless asked) test suites.
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git"}
TEST_DIRS = {"test", "tests", "idle_test"}


@dataclass(frozen=True)
class Unit:
    """One definition: ``name`` is ``<file relative to its source folder>::<qualified name>``."""

    name: str
    kind: str  # function | class | method
    text: str
    docstring: str

    @property
    def function(self) -> str:
        return self.name.rsplit("::", 1)[-1].rsplit(".", 1)[-1]


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(source_dirs: list[str] | None, include_tests: bool = False,
                 max_files: int | None = None) -> list[tuple[Path, Path]]:
    """``(root, file)`` for every .py file under the folders (sorted, so the corpus is the same everywhere
    for the same files); ``None``: the standard library of the running interpreter."""
    roots = [stdlib_dir()] if source_dirs is None else [Path(d).expanduser() for d in source_dirs]
    skip = SKIP_DIRS if include_tests else SKIP_DIRS | TEST_DIRS
    out = []
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"pretrain.source_dirs: {str(root)!r} is not a folder")
        found = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip]  # pruned, not walked (site-packages is large)
            found += [Path(folder) / n for n in names if n.endswith(".py")]
        out += [(root, path) for path in sorted(found)]
    if max_files is not None:
        out = out[:max_files]
    if not out:
        raise ConfigError(f"pretrain.source_dirs: no .py files under {[str(r) for r in roots]}")
    return out


def files_digest(files: list[tuple[Path, Path]]) -> str:
    """sha256 over each file's relative path and content: the same digest means the same corpus input."""
    h = hashlib.sha256()
    for root, path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _read(path: Path) -> str | None:
    try:
        with tokenize.open(path) as f:  # honours the file's coding declaration
            return f.read()
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _segment(lines: list[str], node: ast.AST) -> str:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return textwrap.dedent("".join(lines[first - 1:node.end_lineno])).rstrip() + "\n"


def _units_of(tree: ast.Module, lines: list[str], prefix: str, min_lines: int, max_chars: int) -> list[Unit]:
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        text = _segment(lines, node)
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        if len(text) > max_chars and kind == "class":
            for sub in node.body:  # a long class: its methods, one unit each
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    sub_text = _segment(lines, sub)
                    if min_lines <= sub_text.count("\n") and len(sub_text) <= max_chars:
                        out.append(Unit(f"{prefix}::{node.name}.{sub.name}", "method", sub_text,
                                        ast.get_docstring(sub) or ""))
            continue
        if min_lines <= text.count("\n") and len(text) <= max_chars:
            out.append(Unit(f"{prefix}::{node.name}", kind, text, ast.get_docstring(node) or ""))
    return out


def extract_units(files: list[tuple[Path, Path]], min_lines: int = 3, max_chars: int = 6000
                  ) -> tuple[list[Unit], dict]:
    """Every definition of every file that parses, and counts of what was read and skipped."""
    units: list[Unit] = []
    counts = {"files": len(files), "unreadable_files": 0, "unparsable_files": 0}
    for root, path in files:
        source = _read(path)
        if source is None:
            counts["unreadable_files"] += 1
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            counts["unparsable_files"] += 1
            continue
        units += _units_of(tree, source.splitlines(keepends=True), str(path.relative_to(root)), min_lines,
                           max_chars)
    counts["units"] = len(units)
    return units, counts


def benchmark_problems() -> list:
    """What must never be trained on: HumanEval (whose problems HumanEvalFix repairs) and the MBPP test split
    (whose references the mutant benchmark mutates), from the packaged files."""
    from selfdebug.problems import load_benchmark

    return [*load_benchmark("humaneval"), *load_benchmark("mbpp", split="test")]


def decontaminate(units: list[Unit], benchmark: list, threshold: float = 0.7) -> tuple[list[Unit], list]:
    """Drop units whose docstring or canonical code is near a benchmark problem (the collection's rule and
    code: ``selfdebug.collect.decontamination``). Returns ``(kept, matches)``."""
    from selfdebug.collect.decontamination import find_contaminated
    from selfdebug.execution.spec import TestSuite
    from selfdebug.problems import Problem

    empty = TestSuite(kind="assert")
    as_problems = [Problem(task_id=u.name, source="corpus", prompt=u.docstring, tests=empty, reference=u.text)
                   for u in units]
    matches = find_contaminated(as_problems, benchmark, threshold=threshold)
    dropped = {m.task_id for m in matches}
    return [u for u in units if u.name not in dropped], matches
