"""``python -m selfdebug.evaluate`` end to end, as users run it: real Hydra, sandbox, models and files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfdebug.problems import load_humaneval
from tests.conftest import REPO
from tests.openai_server import FakeOpenAIServer


def evaluate(run_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "selfdebug.evaluate", f"hydra.run.dir={run_dir}", "progress=false", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WANDB_MODE": "offline", **(env or {})})


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_reference_solves_all_of_humaneval(tmp_path):
    proc = evaluate(tmp_path, "benchmark=humaneval", "model=reference", "n_samples=1", "rounds=0", "ks=[1]",
                    "logger=none")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)
    assert res["n_problems"] == 164 and res["rounds"][0]["pass@1"]["value"] == 100.0
    rows = samples(tmp_path)
    assert len(rows) == 164 and all(r["passed"] for r in rows)


@pytest.mark.slow
def test_reference_solves_all_of_mbpp_test_split(tmp_path):
    proc = evaluate(tmp_path, "benchmark=mbpp", "model=reference", "n_samples=1", "rounds=0", "ks=[1]",
                    "logger=none")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)
    assert res["n_problems"] == 500 and res["rounds"][0]["pass@1"]["value"] == 100.0


@pytest.mark.slow
def test_tiny_model_end_to_end_offline(tmp_path, tiny_cache_dir):
    proc = evaluate(tmp_path, "model=tiny", "benchmark=humaneval", "limit=3", "n_samples=2", "rounds=2",
                    "ks=[1,2]", "sampling.max_new_tokens=24", f"model.generator.tiny_cache_dir={tiny_cache_dir}")
    assert proc.returncode == 0, proc.stderr
    for name in ("samples.jsonl", "results.json", "metrics.jsonl", "summary.json", ".hydra/config.yaml"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run"
    res = results(tmp_path)
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    assert {"pass@1", "pass@2"} <= set(res["rounds"][0])
    rows = samples(tmp_path)
    assert {(r["task_id"], r["sample_index"]) for r in rows if r["round"] == 0} == {
        (f"HumanEval/{t}", i) for t in range(3) for i in range(2)}
    for r in rows:
        assert {"task_id", "round", "sample_index", "solution", "passed", "explanation"} <= set(r)
    assert "results:" in proc.stdout


def scripted_responder(problems):
    """Wrong code first; on a refinement request, an explanation and the reference solution."""
    by_entry = {p.entry_point: p for p in problems}

    def respond(request):
        messages = request["messages"]
        text = "\n".join(m["content"] for m in messages)
        problem = next(p for name, p in by_entry.items() if f"def {name}(" in text)
        n = request.get("n", 1)
        if len(messages) <= 2:  # the initial request (a system turn may precede it)
            return [f"```python\ndef {problem.entry_point}(*args, **kwargs):\n    return None\n```"] * n
        return [f"The function returns None instead of computing the result.\n```python\n{problem.reference}\n```"] * n

    return respond


def test_refinement_rounds_over_an_openai_compatible_server(tmp_path):
    problems = load_humaneval()[:3]
    with FakeOpenAIServer(scripted_responder(problems)) as server:
        overrides = ["model=openai", "model.model=scripted", f"model.base_url={server.base_url}", "limit=3",
                     "n_samples=3", "rounds=2", "ks=[1]", "logger=none"]
        proc = evaluate(tmp_path, *overrides)
        assert proc.returncode == 0, proc.stderr
        res = results(tmp_path)
        assert res["rounds"][0]["pass@1"]["value"] == 0.0
        assert res["rounds"][1]["pass@1"]["value"] == 100.0 and res["rounds"][2]["pass@1"]["value"] == 100.0
        assert res["rounds"][1]["refinement"] == {"attempted": 9, "fixed": 9, "rate": 100.0, "cumulative_rate": 100.0}
        assert res["rounds"][2]["n_programs"] == 0  # nothing left to refine
        assert res["success_refinement_rate"] == 100.0
        refined = [r for r in samples(tmp_path) if r["round"] == 1]
        assert all(r["explanation"].startswith("The function returns None") for r in refined)
        assert all(r["passed"] and "def " in r["solution"] for r in refined)
        # The wrong code and its feedback are in the refinement prompt.
        refine_prompt = "\n".join(m["content"] for m in server.chat_requests[-1].json["messages"])
        assert "return None" in refine_prompt and "Failed test" in refine_prompt
        assert (tmp_path / "requests.jsonl").is_file()

        # Resume: drop the last round and the final files; a re-run only asks for what is missing.
        (tmp_path / "results.json").unlink()
        (tmp_path / "checkpoints" / "round_1.jsonl").unlink()
        before = len(server.chat_requests)
        proc = evaluate(tmp_path, *overrides)
        assert proc.returncode == 0, proc.stderr
        assert len(server.chat_requests) - before == 9  # the 9 refinements of round 1; round 0 came from disk
        assert results(tmp_path)["rounds"][1]["pass@1"]["value"] == 100.0


@pytest.mark.slow
def test_resume_refuses_a_run_dir_of_other_settings(tmp_path):
    assert evaluate(tmp_path, "model=reference", "limit=2", "n_samples=1", "rounds=0", "ks=[1]",
                    "logger=none").returncode == 0
    proc = evaluate(tmp_path, "model=reference", "limit=2", "n_samples=2", "rounds=0", "ks=[1]", "logger=none")
    assert proc.returncode == 2 and "different evaluation" in proc.stderr


# ------------------------------------------------------------------------------------------------ bad input

def assert_clean_failure(proc, run_dir: Path, pattern: str) -> None:
    assert proc.returncode != 0
    assert re.search(pattern, proc.stderr), proc.stderr[-2000:]
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / "samples.jsonl").exists()


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    data = tmp_path / "mbpp.jsonl"
    good = {"task_id": 11, "text": "t", "code": "def f():\n    return 1", "test_setup_code": "",
            "test_list": ["assert f() == 1"], "challenge_test_list": []}
    data.write_text(json.dumps(good) + "\n{not json\n")
    run_dir = tmp_path / "run"
    proc = evaluate(run_dir, "benchmark=mbpp", f"benchmark.loader.path={data}", "model=reference", "logger=none")
    assert_clean_failure(proc, run_dir, r"mbpp\.jsonl:2")


def test_problem_without_tests(tmp_path):
    data = tmp_path / "mbpp.jsonl"
    data.write_text(json.dumps({"task_id": 11, "text": "t", "code": "x = 1", "test_setup_code": "",
                                "test_list": [], "challenge_test_list": []}) + "\n")
    run_dir = tmp_path / "run"
    proc = evaluate(run_dir, "benchmark=mbpp", f"benchmark.loader.path={data}", "model=reference", "logger=none")
    assert_clean_failure(proc, run_dir, r"(?i)no tests")


def test_unknown_benchmark(tmp_path):
    proc = evaluate(tmp_path, "benchmark=nosuchbench", "model=reference", "logger=none")
    assert_clean_failure(proc, tmp_path, r"nosuchbench")


def test_negative_timeout(tmp_path):
    proc = evaluate(tmp_path, "model=reference", "sandbox.timeout=-1", "logger=none")
    assert_clean_failure(proc, tmp_path, r"sandbox\.timeout")
    assert "Traceback" not in proc.stderr


def test_model_path_that_does_not_exist(tmp_path):
    proc = evaluate(tmp_path, "model=hf", f"model.name_or_path={tmp_path}/no-such-model", "limit=1",
                    "logger=none")
    assert_clean_failure(proc, tmp_path, r"model\.name_or_path")
    assert "Traceback" not in proc.stderr
