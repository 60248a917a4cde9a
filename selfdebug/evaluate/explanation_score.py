"""S_ex in evaluation: how close each explanation lies to the mutation teacher's explanations of the same bug.

S_ex is the RL reward's explanation term, computed by the same code (``CompositeReward.score`` with only the
explanation weight on): the mean cosine similarity of the explanation's sentence embedding to each reference
explanation, clamped to [0, 1] (the reward's default ``s_ex_min``); an empty explanation scores 0.

References exist where the benchmark planted the bug (``benchmark=mbpp_mutants``: ``problem.metadata["mutation"]``).
They are what collection would have verified for that wrong program: ``MutationTeacher(seed=benchmark seed)
.explain_one(problem, mutant, feedback, m=3, mutation)``, with the feedback the model was shown (round 1: the
mutant's round-0 feedback). Their refinement is the task's reference, which passes (the benchmark keeps only
such tasks), so all m are verified. A round-r row (r >= 2) explains the previous round's program: it is scored
only when that program is still the mutant (same canonical form), since the references describe the mutant's
bug; otherwise it is counted in ``n_other_program``. Problems without a mutation record get no S_ex.

results.json ``explanation_score`` (null when not computed; ``explanation_score_skipped`` then says why)::

    {"model": "sentence-transformers/all-MiniLM-L6-v2",       # the embedding model (a folder path or hub id)
     "references": {"teacher": "mutation", "m": 3, "seed": 0},
     "round_1": {"mean": 0.61, "ci_low": 0.55, "ci_high": 0.67, "n": 40, "n_empty": 2, "n_other_program": 0},
     "rounds": {"1": <as round_1>, "2": {...}, ...}}           # every refinement round r >= 1 that ran

``mean`` / ``ci_low`` / ``ci_high`` are floats, or null where ``n`` is 0; the interval is a percentile bootstrap
over problems (``judge.mean_ci``, with ``bootstrap.*`` and ``seed``). ``n``: explanations scored; ``n_empty``: of
them, empty ones (scored 0). ``round_1`` is null when no refinement round ran. Each scored row of samples.jsonl
gets ``s_ex`` (a float); rows not scored have no ``s_ex``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfdebug.core.errors import ConfigError
from selfdebug.problems import Problem

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # what ``explanation_model: null`` loads (bundled copy)
CHOICES = ("auto", True, False)
M_REFERENCES = 3  # the mutation teacher's m in collection


@dataclass(frozen=True)
class ExplanationScoreSettings:
    model: str | None = None  # None: the reward's bundled default
    teacher_seed: int = 0  # the benchmark's seed: its mutants were drawn, and are explained, with it
    m: int = M_REFERENCES
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    @property
    def model_name(self) -> str:
        return self.model or BUNDLED_NAME


def check_keys(value, model) -> None:
    """``explanation_score`` and ``explanation_model`` values (cheap; before anything loads)."""
    if not (value is True or value is False or value == "auto"):
        raise ConfigError(f"explanation_score = {value!r}; choose auto (when the benchmark has references), "
                          "true (required) or false (never)")
    if model is not None and not (isinstance(model, str) and model.strip()):
        raise ConfigError(f"explanation_model = {model!r}; give a sentence-transformers folder or hub id, or null "
                          "for the bundled all-MiniLM-L6-v2 (the reward's default)")


def has_references(problem: Problem) -> bool:
    return bool(problem.metadata.get("mutation")) and bool(problem.given_program) and bool(problem.reference)


def applicable(value, problems: Sequence[Problem], mode: str, start: str, rounds: int) -> str | None:
    """None if S_ex is to be computed, else why not; ``value=true`` makes a benchmark without references (or a
    start that does not explain them) a ConfigError."""
    if value is False:
        return "explanation_score = false"
    if mode != "explain_refine":
        # Not an error even with true: a sweep over both modes runs its refine jobs (as the judge does).
        return f"mode = {mode}: the model writes no explanations"
    if not any(has_references(p) for p in problems):
        if value is True:
            raise ConfigError("explanation_score = true, but no problem of the benchmark carries a mutation record "
                              "to take reference explanations from; use benchmark=mbpp_mutants, or "
                              "explanation_score=auto")
        return "the benchmark has no reference explanations (only benchmark=mbpp_mutants has)"
    if start != "given":
        if value is True:
            raise ConfigError(f"explanation_score = true needs start = given (got start = {start}): the references "
                              "explain the benchmark's mutants, not the model's own first programs")
        return f"start = {start}: the model explains its own programs, not the benchmark's mutants"
    if rounds < 1:
        return "rounds = 0: no refinement round, so no explanations"
    return None


def load_reward(settings: ExplanationScoreSettings):
    """The RL reward with only its explanation term, its embedding model loaded now (a bad name fails here,
    before the evaluated model loads)."""
    from selfdebug.rewards import CompositeReward

    try:
        reward = CompositeReward(weights={"codebleu": 0.0, "unit_tests": 0.0, "explanation": 1.0},
                                 explanation_model=settings.model, name="eval_s_ex")
        reward.scorer  # noqa: B018 -- loads the model
    except ConfigError as exc:  # its message names reward.explanation_model; here the key is another
        raise ConfigError(f"explanation_model = {settings.model!r}: {exc}") from None
    return reward


def _canonical(code: str | None) -> str | None:
    from selfdebug.collect.teachers.mutation import canonical

    return canonical(code)


def reference_explanations(problem: Problem, feedback: str, settings: ExplanationScoreSettings) -> list[str]:
    """The mutation teacher's explanations of the problem's mutant, as collection writes them."""
    from selfdebug.collect.teachers.mutation import MutationTeacher
    from selfdebug.collect.teachers.mutation.records import Mutation

    teacher = MutationTeacher(seed=settings.teacher_seed)
    pairs = teacher.explain_one(problem, problem.given_program, feedback, settings.m,
                                Mutation.from_dict(problem.metadata["mutation"]))
    return [text for text, _ in pairs]


def score_rows(rows: list[dict], problems: Sequence[Problem], settings: ExplanationScoreSettings,
               n_rounds: int | None = None, reward=None) -> dict:
    """Scores the refinement rows that have references (``row["s_ex"]``) and returns results.json's entry.
    ``n_rounds``: the evaluation's rounds, so a round with nothing left to refine still gets an entry (n 0);
    ``reward``: from :func:`load_reward` (loaded here if None)."""
    from selfdebug.evaluate.judge import mean_ci
    from selfdebug.execution import ExecResult
    from selfdebug.rewards import RewardSample, build_references

    reward = reward if reward is not None else load_reward(settings)
    by_id = {p.task_id: p for p in problems}
    previous = {(r["task_id"], r["round"], r["sample_index"]): r for r in rows}
    mutant_code = {p.task_id: _canonical(p.given_program) for p in problems if has_references(p)}
    records: dict[str, list[dict]] = {}  # (task, feedback) -> reference records, built once each
    chosen, samples, other = [], [], {}
    for row in rows:
        rnd, problem = row["round"], by_id.get(row["task_id"])
        if rnd < 1 or problem is None or problem.task_id not in mutant_code:
            continue
        prev = previous.get((row["task_id"], rnd - 1, row["sample_index"]))
        if prev is None:
            continue
        if rnd > 1 and _canonical(prev["code"] or prev["completion"]) != mutant_code[problem.task_id]:
            other[rnd] = other.get(rnd, 0) + 1
            continue
        key = f"{problem.task_id}\x1f{prev['feedback']}"
        if key not in records:
            records[key] = [{"wrong_id": key, "explanation": text, "refinement": problem.reference,
                             "verdict": "correct"}
                            for text in reference_explanations(problem, prev["feedback"], settings)]
        if not records[key]:
            continue
        chosen.append(row)
        # The verdict only feeds S_ut, which is weighted 0 here; S_ex reads the explanation alone.
        samples.append(RewardSample(key, row.get("solution") or "", ExecResult(
            status=row["status"], n_passed=int(row["n_passed"]), n_tests=int(row["n_tests"])),
            row.get("explanation") or ""))
    refs = build_references(r for recs in records.values() for r in recs)
    s_ex = reward.score(samples, references=refs).s_ex if samples else []
    for row, value in zip(chosen, s_ex):
        row["s_ex"] = float(value)  # NaN only without references, which every chosen row has

    rounds = {}
    ran = {r["round"] for r in rows if r["round"] >= 1} | set(range(1, (n_rounds or 0) + 1))
    for rnd in sorted(ran):
        these = [r for r in chosen if r["round"] == rnd]
        ci = mean_ci([r["s_ex"] for r in these], [r["task_id"] for r in these], settings.n_resamples,
                     settings.confidence, settings.seed)
        rounds[str(rnd)] = {**ci, "n_empty": sum(1 for r in these if not (r.get("explanation") or "").strip()),
                            "n_other_program": other.get(rnd, 0)}
    return {"model": settings.model_name,
            "references": {"teacher": "mutation", "m": settings.m, "seed": settings.teacher_seed},
            "round_1": rounds.get("1"), "rounds": rounds}
