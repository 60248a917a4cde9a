"""Two models on the same problems, compared problem by problem.

The learning targets are differences (SFT minus base, RL minus SFT) measured on one set of wrong programs, and
the two models' unpaired intervals overlap long before a paired difference is uncertain: most programs are
repaired by both or by neither, and only the programs where the two disagree say anything. So per pair of
evaluations this gives the programs the second model repairs and the first does not (``gained``), the reverse
(``lost``), the mean difference in points with a bootstrap interval over problems, and the exact two-sided
sign test on the problems where they differ (McNemar's exact test when each problem has one sample).

    first, second = problem_pass_rates(run_a / "samples.jsonl"), problem_pass_rates(run_b / "samples.jsonl")
    paired_difference(first, second)   # {"difference": 3.03, "low": ..., "gained": 7, "lost": 4, "p_sign": ...}
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from selfdebug.core.errors import DataError
from selfdebug.evaluate.passk import bootstrap_ci
from selfdebug.evaluate.protocol import solved_rounds
from selfdebug.problems.records import iter_records


def problem_pass_rates(samples: str | Path, round_index: int = 1) -> dict[str, float]:
    """``{task_id: fraction of its samples that pass}`` after refinement round ``round_index``, from an
    evaluation's ``samples.jsonl``: a sample is solved once any of its rows up to that round passed, as the
    evaluation's pass@k by round counts it (``selfdebug.evaluate.protocol.solved_rounds``)."""
    rows, sample_ids = [], {}
    for where, row in iter_records(samples):
        try:
            task, index, at = str(row["task_id"]), int(row["sample_index"]), int(row["round"])
            passed = bool(row["passed"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: a samples.jsonl row needs task_id, sample_index, round and passed") from None
        if at <= round_index:
            rows.append({"task_id": task, "sample_index": index, "round": at, "passed": passed})
            sample_ids.setdefault(task, set()).add(index)
    solved = solved_rounds(rows)
    return {task: sum((task, i) in solved for i in ids) / len(ids) for task, ids in sorted(sample_ids.items())}


def sign_test_p(gained: int, lost: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven among ``gained + lost`` problems
    that differ, if either model were as likely to be the better one on each."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def paired_difference(first: dict[str, float], second: dict[str, float], n_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> dict | None:
    """``second - first`` on the problems both were evaluated on (pass rates in [0, 1] in, points out); None
    when they share no problem. ``first_pass`` / ``second_pass`` are the two pass rates on the shared problems
    (percent); ``unmatched`` counts problems only one of them has."""
    common = sorted(set(first) & set(second))
    if not common:
        return None
    diff = np.array([second[t] - first[t] for t in common], dtype=float)
    low, high = bootstrap_ci(diff, n_resamples, confidence, seed)
    gained, lost = int((diff > 0).sum()), int((diff < 0).sum())
    return {"problems": len(common), "first_pass": 100 * float(np.mean([first[t] for t in common])),
            "second_pass": 100 * float(np.mean([second[t] for t in common])), "difference": 100 * float(diff.mean()),
            "low": 100 * low, "high": 100 * high, "gained": gained, "lost": lost,
            "p_sign": sign_test_p(gained, lost), "unmatched": len(set(first) ^ set(second))}


def pooled(comparisons: list[dict]) -> dict | None:
    """Several seeds' comparisons of the same pair as one: problems, gained and lost summed, the mean of the
    differences, and the sign test on the summed counts (each seed's programs counted as separate trials)."""
    if not comparisons:
        return None
    gained, lost = sum(c["gained"] for c in comparisons), sum(c["lost"] for c in comparisons)
    return {"runs": len(comparisons), "problems": sum(c["problems"] for c in comparisons),
            "difference": float(np.mean([c["difference"] for c in comparisons])), "gained": gained, "lost": lost,
            "p_sign": sign_test_p(gained, lost)}
