"""Drop training problems that near-duplicate a benchmark problem, by text or by reference solution.

Similarity is the Jaccard index of word n-gram sets (code is compared on its canonical ``ast.unparse`` form,
so formatting does not matter). An inverted index over the benchmark's n-grams keeps it fast for thousands
of training problems.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass

from selfdebug.problems import Problem

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")


def _canonical_code(code: str) -> str:
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return code


def ngrams(text: str, n: int) -> frozenset:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class Match:
    task_id: str
    benchmark_task_id: str
    field: str  # "text" or "code"
    similarity: float


class _Index:
    def __init__(self, docs: dict[str, frozenset]):
        self.docs = docs
        self.postings: dict[tuple, list[str]] = defaultdict(list)
        for doc_id, grams in docs.items():
            for g in grams:
                self.postings[g].append(doc_id)

    def best(self, grams: frozenset) -> tuple[str | None, float]:
        shared: dict[str, int] = defaultdict(int)
        for g in grams:
            for doc_id in self.postings.get(g, ()):
                shared[doc_id] += 1
        best_id, best = None, 0.0
        for doc_id, inter in shared.items():
            sim = inter / (len(grams) + len(self.docs[doc_id]) - inter)
            if sim > best:
                best_id, best = doc_id, sim
        return best_id, best


def find_contaminated(train: list[Problem], benchmarks: list[Problem], threshold: float = 0.7,
                      n: int = 3) -> list[Match]:
    """Training problems whose text or reference is at least ``threshold`` similar to a benchmark problem."""
    text_index = _Index({p.task_id: ngrams(p.prompt, n) for p in benchmarks if p.prompt.strip()})
    code_index = _Index({p.task_id: ngrams(_canonical_code(p.reference), n) for p in benchmarks if p.reference})
    matches = []
    for p in train:
        for field, index, grams in (("text", text_index, ngrams(p.prompt, n)),
                                    ("code", code_index, ngrams(_canonical_code(p.reference or ""), n))):
            if not grams:
                continue
            other, sim = index.best(grams)
            if other is not None and sim >= threshold:
                matches.append(Match(p.task_id, other, field, round(sim, 4)))
                break
    return matches
