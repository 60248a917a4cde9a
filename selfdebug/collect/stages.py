"""Execution-verified collection of explanation and refinement trajectories, as plain functions.

Stages, each resumable because its unit of work is a chunk whose output file appears whole or not at all:

1. ``solutions``: per chunk of problems, sample initial programs from the student (few-shot), judge each
   distinct program once, and (with a teacher that makes its own) judge injected-bug mutants too.
2. ``teacher``: per chunk of wrong programs, m explanation + refinement samples from the teacher, each
   refinement judged; a refinement is correct only if it passes every test.
3. ``finalize``: JSONL shards of self-contained records and ``stats.json`` (the paper's Table 1 columns).

Chunks are fixed by the problem order and the settings, not by what is left to do, and each chunk's
sampling seed depends only on its index, so a killed and resumed collection writes the same records as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from selfdebug.collect.teachers.base import Teacher, WrongSolution
from selfdebug.core.errors import ConfigError, SelfDebugError
from selfdebug.core.prompts import assemble_program, initial_messages, parse_completion, pick_examples
from selfdebug.core.tracking import write_json_atomic
from selfdebug.execution import Sandbox
from selfdebug.execution.time_limits import check_time_limit_keys, limits_from_runs
from selfdebug.generation import GenerationRequest, Generator, SamplingParams
from selfdebug.problems import Problem

log = logging.getLogger(__name__)

RECORD_FIELDS = ("id", "problem_id", "source", "problem", "entry_point", "tests", "wrong_id", "wrong_code",
                 "wrong_origin", "feedback", "wrong_status", "wrong_n_passed", "explanation", "refinement",
                 "verdict", "status", "n_passed", "n_tests", "teacher", "teacher_model", "sample_index",
                 "sampling", "mutation")


@dataclass
class CollectSettings:
    n_initial: int = 20  # samples per problem from each student (paper: 20 at temperature 1.0)
    few_shot: int = 3  # worked examples in the student's prompt (paper: 3-shot)
    initial_sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=1.0))
    m_refinements: int = 10  # teacher samples per wrong program (paper: 10 at temperature 0.8)
    mutants_per_problem: int = 0  # wrong programs a mutation teacher injects per problem
    max_wrong_per_problem: int | None = None
    chunk_problems: int = 16
    chunk_wrong: int = 32
    mode: str = "explain_refine"
    seed: int = 0
    shard_size: int = 5000
    # Per-problem time limit (selfdebug/execution/time_limits.py): timeout_factor x the reference's own run time,
    # at least min_timeout seconds, at most sandbox.timeout. Injected bugs loop forever often enough that a flat
    # 10 s would dominate the run.
    timeout_factor: float = 10.0
    min_timeout: float = 2.0

    def __post_init__(self) -> None:
        for key in ("n_initial", "m_refinements", "mutants_per_problem", "few_shot"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} = {getattr(self, key)}; it must be >= 0")
        for key in ("chunk_problems", "chunk_wrong", "shard_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} = {getattr(self, key)}; it must be >= 1")
        if self.m_refinements == 0:
            raise ConfigError("m_refinements = 0: the teacher must write at least one refinement per wrong program")
        check_time_limit_keys(self.timeout_factor, self.min_timeout)


def normalize_program(program: str) -> str:
    """Whitespace-insensitive form used to judge identical programs once per problem."""
    lines = [line.rstrip() for line in program.replace("\r\n", "\n").split("\n")]
    return "\n".join(line for line in lines if line.strip())


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]


_UNWRITABLE = re.compile("[\ud800-\udfff\x00]")


def clean_text(text: str | None) -> str | None:
    """Text safe to write as UTF-8 JSON: lone surrogates and NULs (from broken bytes) are replaced."""
    if text is None:
        return None
    return _UNWRITABLE.sub("\ufffd", text)


def _write_chunk(path: Path, payload: dict) -> None:
    write_json_atomic(path, payload)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ------------------------------------------------------------------------------------------------ stage 0

def verify_references(problems: list[Problem], sandbox: Sandbox,
                      settings: CollectSettings) -> tuple[list[Problem], list[dict], dict[str, float]]:
    """Problems whose own reference fails its tests are skipped and reported (a broken problem teaches
    nothing and would poison the mutation teacher). Also returns each problem's time limit."""
    with_ref = [p for p in problems if p.reference]
    results = sandbox.run_batch([(p.reference, p.tests) for p in with_ref], progress="checking references")
    bad = {p.task_id: r for p, r in zip(with_ref, results) if not r.passed}
    skipped = [{"task_id": t, "reason": f"reference {r.status}", "feedback": r.feedback[:300]} for t, r in bad.items()]
    for s in skipped:
        log.warning("skipping %s: its own reference fails its tests (%s)", s["task_id"], s["reason"])
    timeouts = limits_from_runs(with_ref, results, settings.timeout_factor, settings.min_timeout,
                                sandbox.config.timeout)
    return [p for p in problems if p.task_id not in bad], skipped, timeouts


# ------------------------------------------------------------------------------------------------ stage 1

def as_students(student) -> dict[str, Generator]:
    """``{name: generator}`` from None (no student), one generator, or a mapping (pooled students)."""
    if student is None:
        return {}
    if isinstance(student, Generator):
        return {student.name: student}
    return dict(student)


def solutions_stage(problems: list[Problem], student, teacher: Teacher, sandbox: Sandbox,
                    settings: CollectSettings, work_dir: Path, examples: list[Problem] = (),
                    timeouts: dict[str, float] | None = None) -> None:
    """``student``: None, one generator, or ``{name: generator}`` whose samples are pooled (the paper samples
    wrong code from StarCoder and CodeLlama together); each program remembers the student that wrote it.
    ``examples``: the few-shot pool; each prompt takes ``settings.few_shot`` of them, never its own problem."""
    out_dir = work_dir / "solutions"
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(problems, settings.chunk_problems)
    todo = [(i, c) for i, c in enumerate(chunks) if not (out_dir / f"chunk-{i:05d}.json").exists()]
    if not todo:
        return
    for index, chunk in tqdm(todo, desc="initial solutions", unit="chunk"):
        payload = {"problems": [_problem_solutions(p, s) for p, s in
                                zip(chunk, _sample_and_judge(chunk, index, student, teacher, sandbox, settings,
                                                             examples, timeouts or {}))]}
        _write_chunk(out_dir / f"chunk-{index:05d}.json", payload)


def _sample_and_judge(chunk, chunk_index, student, teacher, sandbox, settings, examples, timeouts):
    completions = [[] for _ in chunk]  # per problem: (student name, completion) in a fixed order
    if settings.n_initial > 0:
        params = replace(settings.initial_sampling, n=settings.n_initial, seed=settings.seed + chunk_index)
        requests = [GenerationRequest(initial_messages(p, pick_examples(examples, p, settings.few_shot)), p)
                    for p in chunk]
        for name, generator in as_students(student).items():
            for pi, texts in enumerate(generator.generate(requests, params)):
                completions[pi] += [(name, text) for text in texts]
    per_problem = []
    jobs = []  # (problem index, entry) to judge
    for pi, (problem, texts) in enumerate(zip(chunk, completions)):
        samples, unique = [], {}
        for si, (name, text) in enumerate(texts):
            code = parse_completion(text).code
            program = assemble_program(problem, code) if code is not None else ""
            norm = _digest(normalize_program(program))
            samples.append({"index": si, "norm_id": norm, "student": name})
            if norm not in unique:  # a program several students wrote is judged once, named after the first
                unique[norm] = {"norm_id": norm, "program": clean_text(program), "completion": clean_text(text),
                                "origin": "student", "student": name}
                jobs.append((pi, unique[norm]))
        mutants = []
        for code, meta in teacher.propose_wrong(problem, settings.mutants_per_problem):
            entry = {"norm_id": _digest(normalize_program(code)), "program": code, "origin": "mutation",
                     "mutation": meta}
            if entry["norm_id"] not in {m["norm_id"] for m in mutants}:
                mutants.append(entry)
                jobs.append((pi, entry))
        per_problem.append({"samples": samples, "unique": list(unique.values()), "mutants": mutants})
    results = sandbox.run_batch([(entry["program"], chunk[pi].tests, timeouts.get(chunk[pi].task_id))
                                 for pi, entry in jobs], progress=f"judging chunk {chunk_index}")
    for (pi, entry), res in zip(jobs, results):
        entry.update(passed=res.passed, status=res.status, n_passed=res.n_passed, n_tests=res.n_tests,
                     feedback=clean_text(res.feedback))
    return per_problem


def _problem_solutions(problem: Problem, s: dict) -> dict:
    return {"task_id": problem.task_id, "source": problem.source, **s}


def load_solutions(work_dir: Path, n_chunks: int) -> list[dict]:
    rows = []
    for i in range(n_chunks):
        path = work_dir / "solutions" / f"chunk-{i:05d}.json"
        rows.extend(json.loads(path.read_text())["problems"])
    return rows


def wrong_solutions(solution_rows: list[dict], problems_by_id: dict[str, Problem],
                    settings: CollectSettings) -> list[WrongSolution]:
    """Every distinct wrong program (student samples, then mutants) in a fixed order."""
    wrongs = []
    for row in solution_rows:
        problem = problems_by_id[row["task_id"]]
        entries = [e for e in row["unique"] + row["mutants"] if not e["passed"] and e["program"]]
        if settings.max_wrong_per_problem is not None:
            entries = entries[:settings.max_wrong_per_problem]
        for e in entries:
            wrongs.append(WrongSolution(solution_id=_digest(problem.task_id, e["program"]), problem=problem,
                                        code=e["program"], feedback=e["feedback"], status=e["status"],
                                        n_passed=e["n_passed"], n_tests=e["n_tests"], origin=e["origin"],
                                        mutation=e.get("mutation"), student=e.get("student")))
    return wrongs


# ------------------------------------------------------------------------------------------------ stage 2

def teacher_stage(wrongs: list[WrongSolution], teacher: Teacher, sandbox: Sandbox, settings: CollectSettings,
                  work_dir: Path, sampling: dict, timeouts: dict[str, float] | None = None) -> list[int]:
    """Returns the indices of chunks that could not be done (teacher unreachable); a re-run retries them."""
    out_dir = work_dir / "teacher"
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(wrongs, settings.chunk_wrong)
    todo = [(i, c) for i, c in enumerate(chunks) if not (out_dir / f"chunk-{i:05d}.json").exists()]
    failed = []
    for index, chunk in tqdm(todo, desc="teacher", unit="chunk"):
        try:
            samples = teacher.explain_and_refine(chunk, settings.m_refinements, seed=settings.seed + 7919 * index)
        except (SelfDebugError, OSError) as exc:
            log.error("teacher chunk %d (%d wrong programs) failed: %s; re-run to retry it", index, len(chunk), exc)
            failed.append(index)
            continue
        records, reasons = _judge_refinements(chunk, samples, teacher, sandbox, settings, sampling, index,
                                              timeouts or {})
        _write_chunk(out_dir / f"chunk-{index:05d}.json", {"records": records, "rejected": reasons})
    return failed


def _judge_refinements(chunk, samples, teacher, sandbox, settings, sampling, chunk_index, timeouts):
    reasons = Counter()
    jobs = []
    for wrong, outs in zip(chunk, samples):
        if not outs:
            reasons["teacher_cannot_explain"] += 1
            continue
        for j, s in enumerate(outs):
            if s.code is None:
                reasons["no_code_block"] += 1
                continue
            explanation = clean_text(s.explanation or "").strip()
            if settings.mode == "explain_refine" and not explanation:
                reasons["empty_explanation"] += 1
                continue
            jobs.append((wrong, j, explanation, clean_text(assemble_program(wrong.problem, clean_text(s.code)))))
    results = sandbox.run_batch([(program, wrong.problem.tests, timeouts.get(wrong.problem.task_id))
                                 for wrong, _, _, program in jobs], progress=f"judging refinements {chunk_index}")
    records = []
    for (wrong, j, explanation, program), res in zip(jobs, results):
        p = wrong.problem
        records.append({
            "id": _digest(wrong.solution_id, str(j), explanation, program), "problem_id": p.task_id,
            "source": p.source, "problem": p.prompt, "entry_point": p.entry_point, "tests": p.tests.to_dict(),
            "wrong_id": wrong.solution_id, "wrong_code": wrong.code, "wrong_origin": wrong.origin,
            "feedback": wrong.feedback, "wrong_status": wrong.status, "wrong_n_passed": wrong.n_passed,
            "explanation": explanation, "refinement": program, "verdict": "correct" if res.passed else "wrong",
            "status": res.status, "n_passed": res.n_passed, "n_tests": res.n_tests, "teacher": teacher.name,
            "teacher_model": teacher.model, "sample_index": j, "sampling": sampling, "mutation": wrong.mutation,
            **problem_fields(p), "student": wrong.student})
    return records, dict(reasons)


# ------------------------------------------------------------------------------------------------ stage 3

def problem_fields(p: Problem) -> dict:
    """What a record needs beyond task text, entry point and tests to rebuild the prompt it was collected with
    (``selfdebug.train.data.record_problem``): the starter code and the tests shown in the prompt."""
    return {"starter_code": p.starter_code, "tests_shown": list(p.tests_shown)}


def finalize(solution_rows: list[dict], problems: list[Problem], wrongs: list[WrongSolution], work_dir: Path,
             n_teacher_chunks: int, out_dir: Path, settings: CollectSettings, extra_stats: dict,
             student_name: str) -> dict:
    """Writes ``out_dir`` (shards + stats.json) under a temporary name, then renames it into place."""
    records, rejected = [], Counter()
    for i in range(n_teacher_chunks):
        chunk = json.loads((work_dir / "teacher" / f"chunk-{i:05d}.json").read_text())
        records.extend(chunk["records"])
        rejected.update(chunk["rejected"])
    by_id = {p.task_id: p for p in problems}
    codegen = []
    for row in solution_rows:
        p = by_id[row["task_id"]]
        for e in row["unique"]:
            if e["passed"]:
                codegen.append({"id": _digest(p.task_id, e["program"]), "problem_id": p.task_id, "source": p.source,
                                "problem": p.prompt, "entry_point": p.entry_point, "tests": p.tests.to_dict(),
                                **problem_fields(p), "code": e["program"], "n_passed": e["n_passed"],
                                "n_tests": e["n_tests"], "model": e.get("student") or student_name,
                                "sampling": asdict(settings.initial_sampling)})
    stats = collection_stats(solution_rows, wrongs, records, rejected, problems)
    stats.update(extra_stats)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _write_shards(tmp / "trajectories", records, settings.shard_size)
    _write_shards(tmp / "codegen", codegen, settings.shard_size)
    write_json_atomic(tmp / "stats.json", stats)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return stats


def _write_shards(folder: Path, rows: list[dict], size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    parts = _chunks(rows, size) or [[]]
    for i, part in enumerate(parts):
        with open(folder / f"part-{i:05d}-of-{len(parts):05d}.jsonl", "w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def collection_stats(solution_rows, wrongs, records, rejected, problems) -> dict:
    """The paper's Table 1 columns per source, plus what was dropped and why."""
    fixed = {r["wrong_id"] for r in records if r["verdict"] == "correct"}
    per_source: dict[str, Counter] = defaultdict(Counter)
    for row in solution_rows:
        c = per_source[row["source"]]
        c["problems"] += 1
        c["unique_solutions"] += sum(1 for e in row["unique"] if e["program"])
        c["correct"] += sum(1 for e in row["unique"] if e["passed"])
        c["wrong"] += sum(1 for e in row["unique"] if not e["passed"] and e["program"])
        c["no_code_samples"] += sum(1 for e in row["unique"] if not e["program"])
        c["mutants_wrong"] += sum(1 for e in row["mutants"] if not e["passed"])
        c["mutants_surviving"] += sum(1 for e in row["mutants"] if e["passed"])
    for w in wrongs:
        c = per_source[w.problem.source]
        c["wrong_to_teacher"] += 1
        c["wrong_with_correct_refinement"] += w.solution_id in fixed
    for r in records:
        c = per_source[r["source"]]
        c["refinements"] += 1
        c["refinements_correct"] += r["verdict"] == "correct"
    sources = {}
    for name, c in per_source.items():
        d = dict(c)
        d["refinement_rate"] = round(100 * c["wrong_with_correct_refinement"] / c["wrong_to_teacher"], 2) \
            if c["wrong_to_teacher"] else 0.0
        sources[name] = d
    return {"sources": sources, "records": len(records),
            "records_correct": sum(r["verdict"] == "correct" for r in records),
            "teacher_rejected": dict(rejected)}
