"""Collection throughput with the mutation teacher: wrong programs processed per second, and where time goes.

Runs the real collection stages on MBPP train with the default sandbox (verdict cache on) and per-problem time
limits: references checked, mutants proposed and judged, m explanations + refinements per wrong program, every
refinement judged. The teacher's and the sandbox's wall time are measured separately.

    python benchmarks/collect_throughput.py [--limit 374] [--mutants 3] [--m 10]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from selfdebug.collect.stages import (CollectSettings, load_solutions, solutions_stage, teacher_stage,
                                  verify_references, wrong_solutions)
from selfdebug.execution import Sandbox
from selfdebug.problems import data_file, load_mbpp
from selfdebug.collect.teachers.mutation import MutationTeacher


class Timed:
    """Wraps an object and adds up the wall time spent in the named methods."""

    def __init__(self, inner, methods):
        self._inner, self.seconds = inner, 0.0
        for name in methods:
            setattr(self, name, self._timed(getattr(inner, name)))

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return wrapper

    def __getattr__(self, name):
        return getattr(self._inner, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N MBPP train problems (default: all 374)")
    parser.add_argument("--mutants", type=int, default=3, help="mutants per problem")
    parser.add_argument("--m", type=int, default=10, help="teacher samples per wrong program")
    args = parser.parse_args()

    problems = load_mbpp(data_file("mbpp.jsonl"), split="train")[: args.limit]
    settings = CollectSettings(n_initial=0, m_refinements=args.m, mutants_per_problem=args.mutants)
    teacher = Timed(MutationTeacher(seed=0), ["propose_wrong", "explain_and_refine"])
    with tempfile.TemporaryDirectory() as tmp, Sandbox() as raw_sandbox:
        sandbox = Timed(raw_sandbox, ["run_batch"])
        work = Path(tmp)
        start = time.perf_counter()
        problems, _, timeouts = verify_references(problems, sandbox, settings)
        solutions_stage(problems, None, teacher, sandbox, settings, work, timeouts=timeouts)
        rows = load_solutions(work, -(-len(problems) // settings.chunk_problems))
        wrongs = wrong_solutions(rows, {p.task_id: p for p in problems}, settings)
        teacher_stage(wrongs, teacher, sandbox, settings, work, sampling={}, timeouts=timeouts)
        total = time.perf_counter() - start
        refinements = sum(len(json.loads(f.read_text())["records"]) for f in (work / "teacher").glob("chunk-*.json"))
        stats = raw_sandbox.stats()
    print(json.dumps({
        "benchmark": "collect_throughput", "teacher": "mutation", "problems": len(problems),
        "wrong_programs": len(wrongs), "refinements_judged": refinements,
        "wrong_per_s": round(len(wrongs) / total, 1), "seconds": round(total, 2),
        "sandbox_share": round(sandbox.seconds / total, 3), "teacher_share": round(teacher.seconds / total, 3),
        "programs_judged": stats["executed"] + stats["cache_hits"], "programs_run": stats["executed"],
        "cache_hits": stats["cache_hits"], "sandbox_timeouts": stats["timeouts"], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
