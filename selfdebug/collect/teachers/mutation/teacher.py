"""``MutationTeacher``: the offline teacher that plants bugs and explains them (no language model)."""

from __future__ import annotations

import random
from collections.abc import Iterable

from selfdebug.collect.teachers.base import Teacher, TeacherSample, WrongSolution
from selfdebug.collect.teachers.mutation.diff import explain_diff
from selfdebug.collect.teachers.mutation.explain import explain
from selfdebug.collect.teachers.mutation.generate import mutants
from selfdebug.collect.teachers.mutation.operators import select_operators
from selfdebug.collect.teachers.mutation.records import Mutant, Mutation, canonical, stable_seed


class MutationTeacher(Teacher):
    """A teacher that needs no language model.

    ``propose`` plants bugs in a problem's reference (the caller judges them and keeps the failing ones);
    ``explain_and_refine`` explains a wrong program, from its mutation record when there is one and from its
    diff against the reference otherwise, and offers the reference as the refinement.
    """

    name = "mutation"

    model = "ast-mutation"

    def __init__(self, seed: int = 0, operators: Iterable[str] | None = None, max_changed_lines: int = 4,
                 wrong_fix_rate: float = 0.2):
        if not 0.0 <= wrong_fix_rate <= 1.0:
            raise ValueError(f"wrong_fix_rate must be in [0, 1], got {wrong_fix_rate}")
        self.seed = seed
        # A real teacher is sometimes wrong, and RL needs failed trajectories: this share of samples offers
        # another plausible-but-buggy variant of the reference as the "fix" (the judge labels it).
        self.wrong_fix_rate = wrong_fix_rate
        self.operators = None if operators is None else list(operators)
        select_operators(self.operators)  # fail now on an unknown name
        self.max_changed_lines = max_changed_lines

    def propose(self, problem, k: int) -> list[Mutant]:
        """Up to ``k`` mutants of the problem's reference, the same for the same (seed, task id)."""
        if not problem.reference:
            return []
        rng = random.Random(stable_seed(self.seed, problem.task_id, "propose"))
        return mutants(problem.reference, rng, k, self.operators)

    def propose_wrong(self, problem, k: int) -> list[tuple[str, dict]]:
        return [(mutant.code, mutant.mutation.to_dict()) for mutant in self.propose(problem, k)]

    def explain_and_refine(self, wrongs: list[WrongSolution], m: int, seed: int) -> list[list[TeacherSample]]:
        """The Teacher interface. Deterministic per (teacher seed, program): ``seed`` is not needed."""
        out = []
        for w in wrongs:
            mutation = Mutation.from_dict(w.mutation) if w.mutation else None
            pairs = self.explain_one(w.problem, w.code, w.feedback, m, mutation)
            samples = []
            for j, (text, code) in enumerate(pairs):
                rng = random.Random(stable_seed(self.seed, w.solution_id, j, "fix"))
                if rng.random() < self.wrong_fix_rate:
                    wrong_code = canonical(w.code)
                    others = [x for x in mutants(w.problem.reference, rng, 3, self.operators) if x.code != wrong_code]
                    if others:
                        code = others[0].code
                samples.append(TeacherSample(explanation=text, code=code, raw=text,
                                             meta={"mutation": w.mutation} if w.mutation else {}))
            out.append(samples)
        return out

    def explain_one(self, problem, wrong_code: str, feedback: str, m: int,
                    mutation: Mutation | None = None) -> list[tuple[str, str]]:
        """Up to ``m`` (explanation, refinement) pairs with distinct explanations; [] if it cannot explain."""
        refinement = canonical(problem.reference) if problem.reference else None
        if refinement is None or m <= 0:
            return []
        rng = random.Random(stable_seed(self.seed, problem.task_id, "explain", wrong_code))
        # A mutation's line numbers refer to the canonical mutant, which is what ``propose`` handed out.
        mutant = None if mutation is None else Mutant(canonical(wrong_code) or wrong_code, mutation, refinement)
        texts: list[str] = []
        for _ in range(4 * m):
            if mutant is not None:
                text = explain(mutant, feedback, rng)
            else:
                text = explain_diff(wrong_code, refinement, feedback, rng, self.max_changed_lines)
                if text is None:
                    return []
            if text not in texts:
                texts.append(text)
                if len(texts) == m:
                    break
        return [(text, refinement) for text in texts]
