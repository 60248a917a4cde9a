"""Per-problem time limits in evaluation: scaled from each reference's run time, kept for a resumed run."""

from __future__ import annotations

import json

import pytest

from selfdebug.core.errors import ConfigError
from selfdebug.evaluate.protocol import EvalSettings, run_self_debug, summarize
from selfdebug.execution import Sandbox, SandboxConfig, TestSuite
from selfdebug.execution.time_limits import time_limit
from selfdebug.generation import Generator, SamplingParams
from selfdebug.problems import Problem
from tests.test_evaluate import assert_clean_failure, evaluate

# A correct program that needs about 1.5 s: inside a limit scaled from a slow reference, outside a 0.5 s floor.
SLOW_FIX = "import time\n\ndef f(x):\n    time.sleep(1.5)\n    return x + 1\n"


def problem(task_id: str, reference_sleep: float) -> Problem:
    reference = f"import time\n\ndef f(x):\n    time.sleep({reference_sleep})\n    return x + 1\n"
    return Problem(task_id=task_id, source="test", prompt="Return x + 1.", entry_point="f",
                   tests=TestSuite(kind="assert", asserts=("assert f(1) == 2",)), reference=reference,
                   given_program="def f(x):\n    return x\n")


class SlowFixer(Generator):
    """Every refinement is ``SLOW_FIX``: correct, but slower than a fast reference's limit allows."""

    name = "slow-fixer"

    def generate(self, requests, params: SamplingParams) -> list[list[str]]:
        return [[f"It adds nothing.\n```python\n{SLOW_FIX}```"] * params.n for _ in requests]


def settings(**kw) -> EvalSettings:
    return EvalSettings(n_samples=1, rounds=1, start="given", ks=(1,), n_resamples=10, **kw)


def by_task(rows: list[dict], round_index: int) -> dict[str, dict]:
    return {r["task_id"]: r for r in rows if r["round"] == round_index}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(timeout=10.0, cache=False)) as sb:
        yield sb


def test_limit_rule():
    assert time_limit(0.01, 10.0, 2.0, 10.0) == 2.0  # the floor
    assert time_limit(0.35, 10.0, 2.0, 10.0) == 3.5  # factor x the reference
    assert time_limit(3.0, 10.0, 2.0, 10.0) == 10.0  # never above the sandbox's own timeout


def test_limits_follow_each_reference_and_resume_reads_them_back(tmp_path, sandbox):
    problems = [problem("fast", 0.0), problem("slow", 0.3)]
    s = settings(timeout_factor=10.0, min_timeout=0.5)
    rows = run_self_debug(problems, SlowFixer(), sandbox, s, checkpoint_dir=tmp_path, progress=False)
    fixed = by_task(rows, 1)
    # The fast reference's problem allows the floor, 0.5 s: the 1.5 s fix times out. The slow one's allows
    # 10 x its 0.3 s run, so the same fix passes.
    assert fixed["fast"]["time_limit"] == 0.5 and fixed["fast"]["status"] == "timeout"
    assert 3.0 <= fixed["slow"]["time_limit"] <= 10.0 and fixed["slow"]["passed"]
    saved = json.loads((tmp_path / "time_limits.json").read_text())
    assert saved["limits"] == {"fast": 0.5, "slow": fixed["slow"]["time_limit"]} and saved["cap"] == 10.0
    summary = summarize(rows, problems, s)["time_limits"]
    assert summary["timeout_factor"] == 10.0 and summary["max"] == fixed["slow"]["time_limit"]

    # A resumed run judges its remaining rounds under the saved limits, not fresh measurements.
    saved["limits"]["slow"] = 0.5
    (tmp_path / "time_limits.json").write_text(json.dumps(saved))
    (tmp_path / "round_1.jsonl").unlink()
    resumed = by_task(run_self_debug(problems, SlowFixer(), sandbox, s, checkpoint_dir=tmp_path, progress=False), 1)
    assert resumed["slow"]["time_limit"] == 0.5 and resumed["slow"]["status"] == "timeout"


def test_flat_limit_without_a_factor(tmp_path, sandbox):
    problems = [problem("fast", 0.0)]
    rows = run_self_debug(problems, SlowFixer(), sandbox, settings(), checkpoint_dir=tmp_path, progress=False)
    assert by_task(rows, 1)["fast"]["passed"] and by_task(rows, 1)["fast"]["time_limit"] == 10.0
    assert not (tmp_path / "time_limits.json").exists()
    # The flat limit keeps the fingerprint runs had before per-problem limits existed; a factor changes it.
    assert settings().fingerprint(problems, "g") != settings(timeout_factor=10.0).fingerprint(problems, "g")


def test_a_problem_whose_reference_fails_keeps_the_sandbox_timeout(tmp_path, sandbox):
    broken = Problem(task_id="broken", source="test", prompt="Return x + 1.", entry_point="f",
                     tests=TestSuite(kind="assert", asserts=("assert f(1) == 2",)), reference="def f(x):\n    return x\n",
                     given_program="def f(x):\n    return x\n")
    rows = run_self_debug([broken], SlowFixer(), sandbox, settings(timeout_factor=10.0, min_timeout=0.5),
                          checkpoint_dir=tmp_path, progress=False)
    assert by_task(rows, 1)["broken"]["time_limit"] == 10.0 and by_task(rows, 1)["broken"]["passed"]


@pytest.mark.parametrize("kw, key", [({"timeout_factor": 0.0}, "timeout_factor"), ({"min_timeout": -1.0}, "min_timeout")])
def test_settings_out_of_range(kw, key):
    with pytest.raises(ConfigError, match=key):
        settings(**kw)


@pytest.mark.parametrize("override, key", [("timeout_factor=-2", "timeout_factor"), ("min_timeout=soon", "min_timeout")])
def test_bad_time_limit_keys_stop_the_evaluation(tmp_path, override, key):
    proc = evaluate(tmp_path, "model=reference", "limit=1", "logger=none", override)
    assert_clean_failure(proc, tmp_path, key)
    assert "Traceback" not in proc.stderr
