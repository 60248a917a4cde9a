"""The self-debugging evaluation protocol, as plain functions (no Hydra, no Trainer).

Per problem, ``n_samples`` initial programs are sampled and judged. Each wrong one gets its execution
feedback and one refinement (mode ``refine`` or ``explain_refine``); a program still wrong is refined again,
up to ``rounds`` times. A sample counts as correct at round r if it passed at any round <= r, so pass@k per
round is computed from the same n samples per problem with the unbiased estimator.

``start`` says where round 0 comes from: ``sample`` (the model writes the initial programs) or ``given`` (a
repair benchmark hands over a wrong program, ``Problem.given_program``; round 0 is that program for each of
the n samples, judged once, and rounds 1..R are the model's refinements). A problem's ``feedback_tests``, when
set, are the tests whose feedback the model sees (HumanEvalFix: the docstring examples); it is always judged
on ``tests``. With ``bug_type`` in the problems' metadata, pass@k per round is also reported per bug type.

With ``timeout_factor`` set, each problem's programs get a time limit scaled from its reference's run time
(``selfdebug/execution/time_limits.py``), measured once per evaluation and kept with its checkpoints, so a
resumed run judges its later rounds under the same limits. Each row records the limit it was judged under.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from selfdebug.core.answers import check_answer_form, parse_answer, shown_program
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.execution import Sandbox
from selfdebug.execution.time_limits import check_time_limit_keys, reference_time_limits
from selfdebug.generation import GenerationRequest, Generator, SamplingParams
from selfdebug.evaluate.passk import summarize_pass_at_k
from selfdebug.problems import Problem
from selfdebug.core.prompts import (
    ParsedCompletion,
    assemble_program,
    initial_messages,
    parse_completion,
    pick_examples,
    refine_messages,
)
from selfdebug.core.tracking import write_json_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)

MODES = ("refine", "explain_refine")
STARTS = ("sample", "given")
NO_SHOWN_TESTS = "No tests are shown for this task, so the program was not run on any; it is wrong."


@dataclass
class EvalSettings:
    n_samples: int = 100
    rounds: int = 3
    mode: str = "explain_refine"
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.8))
    refine_sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.8))
    ks: tuple[int, ...] = (1, 10)
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    start: str = "sample"
    few_shot: int = 0  # worked examples before the initial request (the prompting baseline for base models)
    answer_form: str = "full"  # how refinements are asked for and read (selfdebug.core.answers)
    # Per-problem time limit: timeout_factor x the reference's run time, at least min_timeout seconds, at most
    # sandbox.timeout; None: sandbox.timeout for every program (problems without a passing reference keep it).
    timeout_factor: float | None = None
    min_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode = {self.mode!r}; choose one of {MODES}")
        if self.start not in STARTS:
            raise ConfigError(f"start = {self.start!r}; choose one of {STARTS} (a repair benchmark sets given)")
        if self.n_samples < 1:
            raise ConfigError(f"n_samples = {self.n_samples}; it must be at least 1")
        if self.rounds < 0:
            raise ConfigError(f"rounds = {self.rounds}; it must be 0 (no refinement) or more")
        if self.few_shot < 0:
            raise ConfigError(f"few_shot = {self.few_shot}; it must be 0 (zero-shot) or more")
        check_answer_form(self.answer_form)
        check_time_limit_keys(self.timeout_factor, self.min_timeout)
        # floats, so that 10 and 10.0 give one resume fingerprint
        self.min_timeout = float(self.min_timeout)
        self.timeout_factor = None if self.timeout_factor is None else float(self.timeout_factor)

    def fingerprint(self, problems: list[Problem], generator_name: str) -> str:
        settings = asdict(self)
        if not self.few_shot:
            settings.pop("few_shot")  # zero-shot runs keep the fingerprint they had before few_shot existed
        if self.answer_form == "full":
            settings.pop("answer_form")  # likewise for the paper's answer form
        if self.timeout_factor is None:
            settings.pop("timeout_factor"), settings.pop("min_timeout")  # and for the flat time limit
        blob = json.dumps({"settings": settings, "tasks": [p.task_id for p in problems],
                           "generator": generator_name}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_examples(examples: list[Problem], settings: EvalSettings) -> None:
    """few_shot > 0 needs that many worked examples with reference solutions, plus one to spare for a problem
    that is itself in the pool (it is never shown its own solution)."""
    if settings.few_shot == 0:
        return
    usable = [ex for ex in examples if ex.reference]
    if len(usable) < settings.few_shot + 1:
        raise ConfigError(f"few_shot = {settings.few_shot}: few_shot_examples gives {len(usable)} problems with a "
                          f"reference solution; it needs at least {settings.few_shot + 1}")


def check_start(problems: list[Problem], settings: EvalSettings) -> None:
    """start=given needs every problem to carry the wrong program it starts from."""
    if settings.start == "given":
        bare = [p.task_id for p in problems if not p.given_program]
        if bare:
            raise ConfigError(f"start = given: problem {bare[0]} ({len(bare)} in all) carries no given wrong program; "
                              "use a repair benchmark (benchmark=humanevalfix or benchmark=mbpp_mutants) or start=sample")


def _shown_feedback(problems_by_id, pending, programs, results, sandbox, limits) -> list[str]:
    """The feedback the model sees: from the problem's ``feedback_tests`` where it has them, else the judge's."""
    feedback = [res.feedback for res in results]
    jobs = [(i, problems_by_id[s["task_id"]].feedback_tests) for i, (s, prog, res)
            in enumerate(zip(pending, programs, results)) if prog and not res.passed]
    jobs = [(i, suite) for i, suite in jobs if suite is not None]
    for i, suite in jobs:
        if suite.n_tests == 0:
            feedback[i] = NO_SHOWN_TESTS
    runs = [(i, suite) for i, suite in jobs if suite.n_tests > 0]
    judged = sandbox.run_batch([(programs[i], suite, limits.get(pending[i]["task_id"])) for i, suite in runs])
    for (i, suite), res in zip(runs, judged):
        feedback[i] = res.feedback if not res.passed else (
            f"The program passes the {suite.n_tests} example test{'s' * (suite.n_tests != 1)} shown, but it is wrong: "
            "it fails hidden tests.")
    return feedback


def _judge(problems_by_id, pending, parsed, completions, sandbox, round_index, progress, limits) -> list[dict]:
    """Assemble and judge one parsed completion per pending entry; returns the new sample rows. ``limits``:
    ``{task_id: seconds}``; a problem not in it is judged under the sandbox's timeout."""
    programs = [assemble_program(problems_by_id[s["task_id"]], p.code) if p.code is not None else None
                for s, p in zip(pending, parsed)]
    results = sandbox.run_batch([(prog, problems_by_id[s["task_id"]].tests, limits.get(s["task_id"]))
                                 for s, prog in zip(pending, programs)],
                                progress=f"round {round_index}: judging" if progress else False)
    feedback = _shown_feedback(problems_by_id, pending, programs, results, sandbox, limits)
    rows = []
    for s, text, p, prog, res, fb in zip(pending, completions, parsed, programs, results, feedback):
        rows.append({"task_id": s["task_id"], "round": round_index, "sample_index": s["sample_index"],
                     "solution": prog or "", "passed": res.passed, "status": res.status,
                     "n_passed": res.n_passed, "n_tests": res.n_tests, "feedback": fb,
                     "explanation": p.explanation if round_index > 0 else None, "code": p.code,
                     "completion": text, "time_limit": limits.get(s["task_id"], sandbox.config.timeout)})
    return rows


def run_self_debug(problems: list[Problem], generator: Generator, sandbox: Sandbox, settings: EvalSettings,
                   checkpoint_dir: Path | None = None, progress: bool = True,
                   on_round: Callable[[int, list[dict]], None] | None = None,
                   examples: list[Problem] = ()) -> list[dict]:
    """Runs every round; returns all sample rows. With ``checkpoint_dir``, finished rounds are kept there and
    a re-run with the same settings resumes after the last finished round. ``examples``: the few-shot pool
    (``settings.few_shot`` of them precede each initial request, never the problem itself)."""
    if not problems:
        raise DataError("no problems to evaluate: the benchmark selection is empty")
    check_start(problems, settings)
    check_examples(list(examples), settings)
    examples = [ex for ex in examples if ex.reference]
    by_id = {p.task_id: p for p in problems}
    fingerprint = settings.fingerprint(problems, generator.name)
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        meta = checkpoint_dir / "meta.json"
        if meta.exists() and json.loads(meta.read_text())["fingerprint"] != fingerprint:
            raise ConfigError(f"{checkpoint_dir} holds rounds of a different evaluation (other settings, tasks or "
                              "model); point hydra.run.dir at a new folder")
        write_json_atomic(meta, {"fingerprint": fingerprint})
    limits = problem_time_limits(problems, sandbox, settings, checkpoint_dir, progress)

    latest: dict[tuple[str, int], dict] = {}  # (task_id, sample_index) -> its row from the latest round
    all_rows: list[dict] = []
    for round_index in range(settings.rounds + 1):
        path = checkpoint_dir / f"round_{round_index}.jsonl" if checkpoint_dir is not None else None
        if path is not None and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            log.info("round %d: resumed %d samples from %s", round_index, len(rows), path)
        else:
            rows = _run_round(round_index, problems, by_id, latest, generator, sandbox, settings, progress, limits,
                              examples)
            if path is not None:
                write_jsonl_atomic(path, rows)
        for row in rows:
            latest[(row["task_id"], row["sample_index"])] = row
        all_rows.extend(rows)
        if on_round is not None:
            on_round(round_index, rows)
    return all_rows


def problem_time_limits(problems: list[Problem], sandbox: Sandbox, settings: EvalSettings,
                        checkpoint_dir: Path | None = None, progress: bool = False) -> dict[str, float]:
    """``{task_id: seconds}`` from the references' run times (empty with ``timeout_factor`` None). Measured
    once: with ``checkpoint_dir`` they are kept in ``time_limits.json`` there and read back on resume, as
    timings differ from run to run."""
    if settings.timeout_factor is None:
        return {}
    path = checkpoint_dir / "time_limits.json" if checkpoint_dir is not None else None
    if path is not None and path.exists():
        return json.loads(path.read_text())["limits"]
    limits = reference_time_limits(problems, sandbox, settings.timeout_factor, settings.min_timeout,
                                   progress="timing references" if progress else False)
    untimed = [p.task_id for p in problems if p.task_id not in limits]
    if untimed:
        log.warning("%d of %d problems have no passing reference (e.g. %s); their programs get the sandbox's "
                    "timeout of %gs", len(untimed), len(problems), untimed[0], sandbox.config.timeout)
    if path is not None:
        write_json_atomic(path, {"timeout_factor": settings.timeout_factor, "min_timeout": settings.min_timeout,
                                 "cap": sandbox.config.timeout, "limits": limits})
    return limits


def initial_request(problem: Problem, examples: list[Problem], settings: EvalSettings) -> GenerationRequest:
    """The request for a first program: ``settings.few_shot`` worked examples (not ``problem``), then it."""
    return GenerationRequest(initial_messages(problem, pick_examples(examples, problem, settings.few_shot)), problem)


def _run_round(round_index, problems, by_id, latest, generator, sandbox, settings, progress, limits, examples=()
               ) -> list[dict]:
    if round_index == 0 and settings.start == "given":
        return _given_round(problems, by_id, sandbox, settings, progress, limits)
    if round_index == 0:
        params = replace(settings.sampling, n=settings.n_samples, seed=settings.seed)
        requests = [initial_request(p, examples, settings) for p in problems]
        nested = generator.generate(requests, params)
        pending = [{"task_id": p.task_id, "sample_index": i} for p in problems for i in range(settings.n_samples)]
        completions = [text for texts in nested for text in _exactly(texts, settings.n_samples, generator)]
    else:
        pending = [row for row in latest.values() if not row["passed"]]
        if not pending:
            return []
        params = replace(settings.refine_sampling, n=1, seed=settings.seed + 1000 * round_index)
        requests = [GenerationRequest(refine_messages(by_id[r["task_id"]], r["code"] or r["completion"],
                                                      r["feedback"], settings.mode, settings.answer_form),
                                      by_id[r["task_id"]])
                    for r in pending]
        completions = [_exactly(texts, 1, generator)[0] for texts in generator.generate(requests, params)]
    log.info("round %d: judging %d programs", round_index, len(completions))
    if round_index == 0:
        parsed = [parse_completion(text) for text in completions]
    else:  # an edit-form answer is applied to the program the prompt showed
        parsed = [parse_answer(text, settings.answer_form,
                               shown_program(by_id[r["task_id"]], r["code"] or r["completion"]))
                  for r, text in zip(pending, completions)]
    return _judge(by_id, pending, parsed, completions, sandbox, round_index, progress, limits)


def _given_round(problems, by_id, sandbox, settings, progress, limits) -> list[dict]:
    """Round 0 of a repair benchmark: each problem's given program, judged once, stands for all n samples."""
    pending = [{"task_id": p.task_id, "sample_index": 0} for p in problems]
    parsed = [ParsedCompletion(explanation="", code=p.given_program) for p in problems]
    log.info("round 0: judging %d given programs", len(problems))
    rows = _judge(by_id, pending, parsed, [p.given_program for p in problems], sandbox, 0, progress, limits)
    return [{**row, "sample_index": i} for row in rows for i in range(settings.n_samples)]


def _exactly(texts: list[str], n: int, generator: Generator) -> list[str]:
    if len(texts) != n:
        raise RuntimeError(f"generator {generator.name} returned {len(texts)} completions where {n} were asked for")
    return texts


def solved_rounds(rows) -> dict[tuple[str, int], int]:
    """``{(task_id, sample_index): the first round its program passed}`` over judged rows; a sample counts as
    solved from that round on (pass@k by round, and the report's paired comparison, read it so)."""
    solved_at: dict[tuple[str, int], int] = {}
    for row in rows:
        if row["passed"]:
            key = (row["task_id"], row["sample_index"])
            solved_at[key] = min(solved_at.get(key, row["round"]), row["round"])
    return solved_at


def summarize(rows: list[dict], problems: list[Problem], settings: EvalSettings) -> dict:
    """pass@k per round with bootstrap intervals, refinement rates and verdict counts."""
    solved_at = solved_rounds(rows)
    n = settings.n_samples
    initial_wrong = sum(1 for r in rows if r["round"] == 0 and not r["passed"])
    per_round = []
    for round_index in range(settings.rounds + 1):
        these = [r for r in rows if r["round"] == round_index]
        counts = [(n, sum(1 for i in range(n) if solved_at.get((p.task_id, i), 1 << 30) <= round_index))
                  for p in problems]
        entry = {"round": round_index, "n_programs": len(these), "n_passed": sum(r["passed"] for r in these),
                 "status_counts": dict(Counter(r["status"] for r in these)),
                 **summarize_pass_at_k(counts, settings.ks, settings.n_resamples, settings.confidence, settings.seed)}
        if round_index > 0:
            fixed_by_now = sum(1 for r in solved_at.values() if 0 < r <= round_index)
            entry["refinement"] = {
                "attempted": len(these), "fixed": entry["n_passed"],
                "rate": 100 * entry["n_passed"] / len(these) if these else 0.0,
                "cumulative_rate": 100 * fixed_by_now / initial_wrong if initial_wrong else 0.0}
        per_round.append(entry)
    final = per_round[-1]
    # The paper's tables are one round of refinement: its success refinement rate and refined pass@k are
    # round 1's; later rounds (its Fig. 4) are in ``rounds`` and in the ``_final`` figures.
    first = per_round[1] if len(per_round) > 1 else None
    return {"n_problems": len(problems), "n_samples": n, "mode": settings.mode, "start": settings.start,
            "few_shot": settings.few_shot, "rounds": per_round,
            "by_bug_type": _by_bug_type(problems, solved_at, settings), "initial_wrong": initial_wrong,
            "success_refinement_rate": first["refinement"]["cumulative_rate"] if first else 0.0,
            "success_refinement_rate_final": final.get("refinement", {}).get("cumulative_rate", 0.0),
            "pass@k_initial": passk(per_round[0]), "pass@k_round1": passk(first) if first else None,
            "pass@k_final": passk(final), "time_limits": _time_limit_summary(rows, settings)}


def _time_limit_summary(rows: list[dict], settings: EvalSettings) -> dict:
    """The rule and the per-problem limits the rows were judged under (seconds)."""
    per_problem = {r["task_id"]: r["time_limit"] for r in rows if r.get("time_limit") is not None}
    values = sorted(per_problem.values())
    return {"timeout_factor": settings.timeout_factor,
            "min_timeout": settings.min_timeout if settings.timeout_factor is not None else None,
            "median": values[len(values) // 2] if values else None, "max": values[-1] if values else None}


def passk(entry: dict) -> dict:
    """``{"pass@k": value}`` of one round's entry."""
    return {k: v["value"] for k, v in entry.items() if k.startswith("pass@")}


def _by_bug_type(problems: list[Problem], solved_at: dict, settings: EvalSettings) -> dict:
    """{bug_type: {"n_problems", "rounds": [{"round", "pass@k": ...}]}} for problems whose metadata has one."""
    groups: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        if p.metadata.get("bug_type"):
            groups[str(p.metadata["bug_type"])].append(p)
    n = settings.n_samples
    out = {}
    for bug_type, members in sorted(groups.items()):
        rounds = []
        for r in range(settings.rounds + 1):
            counts = [(n, sum(1 for i in range(n) if solved_at.get((p.task_id, i), 1 << 30) <= r)) for p in members]
            rounds.append({"round": r, **summarize_pass_at_k(counts, settings.ks, settings.n_resamples,
                                                             settings.confidence, settings.seed)})
        out[bug_type] = {"n_problems": len(members), "rounds": rounds}
    return out
