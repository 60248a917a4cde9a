"""Repair pairs: a bug planted in a corpus function (or an MBPP train reference) and its fix, rendered as the
self-debugging conversation SFT and evaluation use (``selfdebug.core.prompts.refine_messages``), so the base
model has seen the task's format before SFT.

    pairs, counts = corpus_pairs(units, n=6000, seed=0, mode="refine", form="line")
    pairs += mbpp_pairs(problems, seed=0, mode="refine", form="line", sandbox_config=SandboxConfig())
    prompt, answer = render_example(pair.example)     # selfdebug.train.data: the prompt exactly as evaluated

The wrong program is the mutant as the mutation teacher writes it (canonical ``ast.unparse`` form), the fix
the canonical original; the answer is in the form ``answers.edit_answer`` writes. A corpus function has no
tests, so its feedback turn says so (``NO_TESTS_FEEDBACK``); an MBPP train mutant is run on its asserts in
the sandbox and shows the judge's real feedback (mutants that still pass are not used).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from selfdebug.collect.teachers.mutation import MutationTeacher, canonical, explain, mutants, stable_seed
from selfdebug.core.answers import edit_answer
from selfdebug.core.prompts import initial_messages, refine_messages
from selfdebug.execution.spec import TestSuite
from selfdebug.problems import Problem
from selfdebug.train.data import Example, answer_text
from selfdebug.train.pretrain.corpus import Unit

NO_TESTS_FEEDBACK = "No tests were run on this code, but it has a bug."


@dataclass(frozen=True)
class RepairPair:
    """One training conversation; ``wrong`` and ``fixed`` are kept so the answer can be checked."""

    example: Example
    wrong: str
    fixed: str
    operator: str
    unit: str  # the unit (or MBPP task) it came from: held-out units keep their pairs out of training


def unit_problem(unit: Unit) -> Problem:
    """The task statement of a corpus function: its name and the first line of its docstring."""
    what = unit.docstring.strip().splitlines()[0].strip() if unit.docstring.strip() else ""
    prompt = f"Write the Python {'method' if unit.kind == 'method' else 'function'} `{unit.function}`."
    return Problem(task_id=unit.name, source="corpus", prompt=f"{prompt} {what}".strip(),
                   tests=TestSuite(kind="assert"), entry_point=unit.function)


def pair_mode(mode: str, index: int) -> str:
    """The conversation mode of the ``index``-th pair: ``both`` alternates refine and explain + refine."""
    return ("refine", "explain_refine")[index % 2] if mode == "both" else mode


def make_pair(problem: Problem, mutant, feedback: str, mode: str, form: str, rng: random.Random,
              unit: str) -> RepairPair | None:
    answer = edit_answer(mutant.code, mutant.reference, form)
    if answer is None:
        return None
    messages = refine_messages(problem, mutant.code, feedback, mode, form)
    if mode == "explain_refine":
        answer = f"{explain(mutant, feedback, rng).strip()}\n\n{answer}"
    # Programs end with one newline, as ``apply_answer`` returns them.
    return RepairPair(Example(mode, problem.task_id, messages, answer), mutant.code.rstrip() + "\n",
                      mutant.reference.rstrip() + "\n", mutant.mutation.operator, unit)


def corpus_pairs(units: list[Unit], n: int, seed: int, mode: str, form: str, max_lines: int = 30,
                 per_function: int = 1) -> tuple[list[RepairPair], dict]:
    """Up to ``n`` pairs, at most ``per_function`` per function (functions and methods of at most ``max_lines``
    lines, drawn in a seeded order), each with one mutation by the teacher's operators; a function's mutants
    are distinct and spread over operators."""
    candidates = [u for u in units if u.kind != "class" and u.text.count("\n") <= max_lines]
    order = random.Random(stable_seed(seed, "pretrain-pairs")).sample(candidates, len(candidates))
    pairs, counts = [], {"candidates": len(candidates), "no_mutant": 0, "not_expressible": 0}
    for unit in order:
        if len(pairs) >= n:
            break
        rng = random.Random(stable_seed(seed, unit.name, "pretrain-mutant"))
        drawn = mutants(unit.text, rng, min(per_function, n - len(pairs)))
        if not drawn:
            counts["no_mutant"] += 1
        problem = unit_problem(unit)
        for mutant in drawn:
            pair = make_pair(problem, mutant, NO_TESTS_FEEDBACK, pair_mode(mode, len(pairs)), form, rng, unit.name)
            if pair is None:
                counts["not_expressible"] += 1
                continue
            pairs.append(pair)
    counts["pairs"] = len(pairs)
    return pairs, counts


def mbpp_pairs(problems: list[Problem], seed: int, mode: str, form: str, sandbox_config, candidates: int = 4
               ) -> tuple[list[RepairPair], dict]:
    """One pair per MBPP train task: its first drawn mutant that fails the task's tests, with the judge's
    feedback (the same teacher, operators and sandbox as collection)."""
    from selfdebug.execution import Sandbox

    teacher = MutationTeacher(seed=seed)
    drawn = {p.task_id: teacher.propose(p, candidates) for p in problems}
    jobs = [(p, m) for p in problems for m in drawn[p.task_id]]
    with Sandbox(sandbox_config) as sandbox:
        verdicts = sandbox.run_batch([(m.code, p.tests) for p, m in jobs])
    pairs, done = [], set()
    counts = {"tasks": len(problems), "judged": len(jobs), "not_expressible": 0}
    for (p, m), verdict in zip(jobs, verdicts):
        if verdict.passed or p.task_id in done:
            continue
        rng = random.Random(stable_seed(seed, p.task_id, "pretrain-explain"))
        pair = make_pair(p, m, verdict.feedback, pair_mode(mode, len(pairs)), form, rng, p.task_id)
        if pair is None:
            counts["not_expressible"] += 1
            continue
        done.add(p.task_id)
        pairs.append(pair)
    counts["pairs"] = len(pairs)
    return pairs, counts


def codegen_examples(problems: list[Problem]) -> list[Example]:
    """MBPP train problems answered with their reference in the collection's code-generation prompt."""
    return [Example("codegen", p.task_id, initial_messages(p), answer_text(canonical(p.reference) or p.reference))
            for p in problems if p.reference]
