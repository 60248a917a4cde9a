"""The refinement's reward: CodeBLEU against verified refinements plus the share of unit tests passed.

    S_cb   = mean over the verified refinements r of the same wrong code of CodeBLEU(candidate, r)
    S_ut   = n_passed / n_tests of the candidate's sandbox verdict
    R_code = 5 * (w_cb * S_cb + w_ut * S_ut) - 5        (paper: w_cb = w_ut = 1, so R_code is in [-5, 5])

CodeBLEU is the ``codebleu`` package's score for Python with its default weights (0.25 each for n-gram,
weighted n-gram, syntax and data-flow match), computed per (candidate, reference) pair and averaged, with
one correction (see :func:`codebleu_pair`): the package counts a data-flow match of zero as a perfect one,
which would let garbage outscore a wrong but related program.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from selfdebug.execution import ExecResult

LANG = "python"
CODEBLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)  # n-gram, weighted n-gram, syntax, data-flow (package default)
_PAIR_CACHE_SIZE = 1 << 16


class _DropDegenerateDataflowWarning(logging.Filter):
    """The package logs a warning (on the root logger) for every reference without data flow; we handle that
    case ourselves, so the warning is noise in a loop over thousands of pairs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "no reference data-flows" not in str(record.msg)


_FILTER = _DropDegenerateDataflowWarning()


@contextmanager
def _quiet_codebleu():
    root = logging.getLogger()
    root.addFilter(_FILTER)
    try:
        yield
    finally:
        root.removeFilter(_FILTER)


def _canonical_data_flow(extract):
    """``extract`` (the package's ``get_data_flow``) with each edge's source-variable names in a fixed order.

    The package builds those name lists from Python sets of strings, so their order, and with it the variable
    numbering its data-flow match compares, follows the process's string-hash seed: the same pair scored 0.9508
    in one process and 0.9558 in another (10 of 300 collected pairs moved, by up to 0.03), so PPO's rewards, and
    the run, were not reproducible. Here each list is ordered by where its names first appear in the code (the
    edges come in token order), which is one numbering in every process and the same for a consistently renamed
    program; names that never start an edge go last, alphabetically."""
    def data_flow(code, parser):
        edges = extract(code, parser)
        first: dict[str, int] = {}
        for position, edge in enumerate(edges):
            first.setdefault(edge[0], position)
        order = lambda name: (first.get(name, len(edges)), name)
        return [(*edge[:3], sorted(edge[3], key=order), *edge[4:]) for edge in edges]

    data_flow.canonical = True
    return data_flow


def _dataflow_module():
    """The package's data-flow module, its extraction made independent of the hash seed (once per process)."""
    from codebleu import dataflow_match

    if not getattr(dataflow_match.get_data_flow, "canonical", False):
        dataflow_match.get_data_flow = _canonical_data_flow(dataflow_match.get_data_flow)
    return dataflow_match


@lru_cache(maxsize=_PAIR_CACHE_SIZE)
def _has_dataflow(reference: str) -> bool:
    """Whether the package extracts any data-flow edge from ``reference`` (it matches itself perfectly iff so)."""
    dataflow_match = _dataflow_module()

    try:
        return bool(dataflow_match.corpus_dataflow_match([[reference]], [reference], LANG))
    except Exception:  # noqa: BLE001 - a reference tree-sitter cannot walk has no usable data flow
        return False


@lru_cache(maxsize=_PAIR_CACHE_SIZE)
def _pair(candidate: str, reference: str, raw_package_score: bool) -> float:
    from codebleu import calc_codebleu

    _dataflow_module()

    try:
        parts = calc_codebleu([reference], [candidate], LANG, weights=CODEBLEU_WEIGHTS)
    except Exception:  # noqa: BLE001 - garbage code must score 0, never stop a PPO step
        return 0.0
    if raw_package_score:
        score = parts["codebleu"]
    else:
        dataflow = parts["dataflow_match_score"] if _has_dataflow(reference) else 1.0
        a, b, c, d = CODEBLEU_WEIGHTS
        score = (a * parts["ngram_match_score"] + b * parts["weighted_ngram_match_score"]
                 + c * parts["syntax_match_score"] + d * dataflow)
    score = float(score)
    return min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0


def codebleu_pair(candidate: str, reference: str, *, raw_package_score: bool = False) -> float:
    """CodeBLEU of ``candidate`` against one ``reference``, in [0, 1]; 0.0 for an empty candidate or whatever
    the package cannot score. Pairs are cached by content.

    The package's formula uses ``dataflow or 1``, so a candidate sharing no data flow with the reference gets
    the full data-flow quarter: an empty or unparsable program scores 0.25, more than an unrelated real one.
    By default the data-flow term is 1 only where the reference itself has no data flow (the degenerate case the
    package means to cover) and the measured match otherwise; ``raw_package_score=True`` keeps the package's
    number unchanged.
    """
    if not isinstance(candidate, str) or not isinstance(reference, str) or not candidate.strip() \
            or not reference.strip():
        return 0.0
    with _quiet_codebleu():
        return _pair(candidate, reference, bool(raw_package_score))


def codebleu_score(candidate: str, references: Sequence[str], *, raw_package_score: bool = False) -> float:
    """Mean CodeBLEU of ``candidate`` against each verified reference refinement; 0.0 without references.

    Compare like with like: the candidate and the references should both be whole programs as the sandbox runs
    them (``selfdebug.core.prompts.assemble_program``), which is what collected records hold in ``refinement``.
    """
    if not references:
        return 0.0
    return float(np.mean([codebleu_pair(candidate, r, raw_package_score=raw_package_score) for r in references]))


def codebleu_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                    raw_package_score: bool = False) -> np.ndarray:
    """:func:`codebleu_score` for a batch: ``references[i]`` are the verified refinements for ``candidates[i]``."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    return np.array([codebleu_score(c, r, raw_package_score=raw_package_score)
                     for c, r in zip(candidates, references)], dtype=np.float64)


def same_program(a: str | None, b: str | None) -> bool:
    """Whether two programs are the same code: the same canonical form (the mutation teacher's ``canonical``:
    layout and comments aside), or equal text where either has none (it does not parse)."""
    from selfdebug.collect.teachers.mutation.records import canonical

    if a is None or b is None:
        return False
    canon_a, canon_b = canonical(a), canonical(b)
    if canon_a is None or canon_b is None:
        return a.strip() == b.strip()
    return canon_a == canon_b


def unit_test_score(result: ExecResult) -> float:
    """Fraction of the problem's tests the program passed (0.0 when there are no tests to run)."""
    return float(result.pass_fraction)


def unit_test_scores(results: Sequence[ExecResult]) -> np.ndarray:
    return np.array([unit_test_score(r) for r in results], dtype=np.float64)


def code_reward(s_cb, s_ut, w_cb: float = 1.0, w_ut: float = 1.0):
    """``R_code = 5 * (w_cb * S_cb + w_ut * S_ut) - 5``; scalars in, float out; arrays in, array out.

    Anchors with the paper's weights (1, 1): S_cb = S_ut = 0 -> -5; S_cb = S_ut = 1 -> 5.
    """
    value = 5.0 * (w_cb * np.asarray(s_cb, dtype=np.float64) + w_ut * np.asarray(s_ut, dtype=np.float64)) - 5.0
    return float(value) if value.ndim == 0 else value


def clear_caches() -> None:
    """Forget cached CodeBLEU pairs (memory is bounded anyway: 65,536 pairs)."""
    _pair.cache_clear()
    _has_dataflow.cache_clear()
