"""``python -m selfdebug.evaluate`` end to end, as users run it: real Hydra, sandbox, models and files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from selfdebug.problems import load_humaneval, load_humanevalpack
from tests.conftest import HEAVY_MODULES, REPO, run_profiled
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


@pytest.mark.slow
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


@pytest.mark.parametrize("mode", ["explain_refine", "refine"])
def test_a_judge_without_its_model_is_one_error_before_any_work(tmp_path, mode):
    # judge=openai leaves judge.model to the user (???), and the judge's name is built from it. Unset, the run
    # ended in an OmegaConf traceback: in refine mode (judge skipped) when the run's config was logged.
    proc = evaluate(tmp_path, "model=reference", "judge=openai", "limit=1", "n_samples=1", "rounds=1", "ks=[1]",
                    "logger=none", f"mode={mode}")
    assert_clean_failure(proc, tmp_path, r"error: judge\.model: required and not set")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_an_unknown_task_id_names_it_and_the_benchmarks_id_form(tmp_path):
    proc = evaluate(tmp_path, "benchmark=humanevalfix", "model=reference", "logger=none", "task_ids=[Python/0,HumanEval/1]")
    assert_clean_failure(proc, tmp_path, r"error: task_ids: no problem 'HumanEval/1' in this benchmark \(its ids look "
                                         r"like 'Python/0'\)")
    assert proc.returncode == 2


# ------------------------------------------------------------------------------------------------ repair benchmarks

def test_humanevalfix_reference_repairs_every_given_program(tmp_path):
    # Python/0: fails its examples; Python/32: passes them but fails the hidden test; Python/38: shows none.
    ids = ["Python/0", "Python/32", "Python/38", "Python/1"]
    proc = evaluate(tmp_path, "benchmark=humanevalfix", "model=reference", "n_samples=2", "rounds=1", "ks=[1,2]",
                    "logger=none", f"task_ids=[{','.join(ids)}]")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)
    assert res["start"] == "given" and res["n_problems"] == 4 and res["initial_wrong"] == 8
    assert [(r["round"], r["pass@1"]["value"], r["pass@2"]["value"]) for r in res["rounds"]] == [
        (0, 0.0, 0.0), (1, 100.0, 100.0)]
    pack = {p.task_id: p for p in load_humanevalpack()}
    kinds = Counter(pack[t].metadata["bug_type"] for t in ids)
    assert {k: e["n_problems"] for k, e in res["by_bug_type"].items()} == kinds and len(kinds) > 1
    for entry in res["by_bug_type"].values():
        assert [r["pass@1"]["value"] for r in entry["rounds"]] == [0.0, 100.0]
    rows = samples(tmp_path)
    first = {r["task_id"]: r for r in rows if r["round"] == 0}
    assert sorted((r["task_id"], r["sample_index"]) for r in rows if r["round"] == 0) == sorted(
        (t, i) for t in ids for i in range(2))
    for t, row in first.items():
        assert row["solution"] == pack[t].given_program and not row["passed"]
        hidden = set(pack[t].tests.asserts) - set(pack[t].tests_shown)
        assert not any(a.strip() in row["feedback"] for a in hidden), (t, row["feedback"])
    assert "has_close_elements([1.0, 2.0, 3.0], 0.5)" in first["Python/0"]["feedback"]
    assert "passes the 2 example tests shown, but it is wrong" in first["Python/32"]["feedback"]
    assert first["Python/38"]["feedback"].startswith("No tests are shown")


@pytest.mark.slow
def test_mbpp_mutants_reference_repairs_every_mutant_and_the_build_is_cached(tmp_path):
    cache = tmp_path / "cache"
    args = ("benchmark=mbpp_mutants", "model=reference", "n_samples=2", "rounds=2", "ks=[1]", "logger=none",
            "limit=4", f"benchmark.loader.cache_dir={cache}")
    proc = evaluate(tmp_path / "a", *args)
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path / "a")
    assert res["start"] == "given" and res["n_problems"] == 4
    assert [r["pass@1"]["value"] for r in res["rounds"]] == [0.0, 100.0, 100.0]
    assert res["rounds"][2]["n_programs"] == 0  # nothing is left to refine after round 1
    from selfdebug.collect.teachers.mutation import OPERATORS

    assert set(res["by_bug_type"]) <= set(OPERATORS) and res["by_bug_type"]
    assert len(list(cache.glob("mbpp_mutants-*.json"))) == 1 and "built 4 mutants" in proc.stdout + proc.stderr
    proc = evaluate(tmp_path / "b", *args)
    assert proc.returncode == 0 and "from the cache" in proc.stdout + proc.stderr, proc.stderr
    assert samples(tmp_path / "a") == samples(tmp_path / "b")


def test_mbpp_mutants_are_deterministic_for_a_seed_and_all_fail(tmp_path):
    from selfdebug.collect.teachers.mutation import canonical
    from selfdebug.evaluate.mutants import load_mbpp_mutants
    from selfdebug.execution import Sandbox

    one = load_mbpp_mutants(limit=8, seed=0, cache_dir=str(tmp_path / "one"))
    two = load_mbpp_mutants(limit=8, seed=0, cache_dir=str(tmp_path / "two"))
    other = load_mbpp_mutants(limit=8, seed=1, cache_dir=str(tmp_path / "one"))

    def key(ps):
        return [(p.task_id, p.given_program, p.metadata["bug_type"]) for p in ps]

    assert key(one) == key(two) and key(one) != key(other)
    assert [p.task_id for p in one][:2] == ["MBPP/11/mutant-0", "MBPP/12/mutant-0"]
    assert all(p.given_program != canonical(p.reference) and p.source == "mbpp_mutants" for p in one)
    assert all(p.tests_shown == p.tests.asserts and p.feedback_tests is None for p in one)
    with Sandbox(timeout=5.0) as sandbox:
        verdicts = sandbox.run_batch([(p.given_program, p.tests) for p in one])
    assert not any(v.passed for v in verdicts)
    two_each = load_mbpp_mutants(limit=3, seed=0, per_problem=2, cache_dir=str(tmp_path / "one"))
    assert [p.task_id for p in two_each][:2] == ["MBPP/11/mutant-0", "MBPP/11/mutant-1"]
    assert two_each[0].given_program == one[0].given_program  # the first failing draw is the same


def test_training_split_mutants_only_as_an_in_distribution_diagnostic(tmp_path):
    from selfdebug.core.errors import ConfigError
    from selfdebug.evaluate.mutants import MutantSettings, cache_key, load_mbpp_mutants
    from selfdebug.execution import Sandbox, SandboxConfig
    from selfdebug.problems import load_mbpp

    with pytest.raises(ConfigError, match="in_distribution=true"):
        load_mbpp_mutants(split="train", limit=2, cache_dir=str(tmp_path))
    train = load_mbpp_mutants(split="train", in_distribution=True, limit=3, cache_dir=str(tmp_path))
    assert [p.task_id.split("/mutant")[0] for p in train] == ["MBPP/601", "MBPP/602", "MBPP/603"][:len(train)]
    assert train and all(p.source == "mbpp_mutants" for p in train)
    with Sandbox(timeout=5.0) as sandbox:
        assert not any(v.passed for v in sandbox.run_batch([(p.given_program, p.tests) for p in train]))
    # The flag unlocks the split; it does not change what is built, so held-out caches keep their names.
    sources = load_mbpp(split="test")[:2]
    assert (cache_key(MutantSettings(limit=2), sources, SandboxConfig())
            == cache_key(MutantSettings(limit=2, in_distribution=True), sources, SandboxConfig()))


def test_repair_benchmark_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        fix = compose("evaluate", overrides=["benchmark=humanevalfix"])
        mutants = compose("evaluate", overrides=["benchmark=mbpp_mutants", "limit=5", "sandbox.timeout=3"])
        plain = compose("evaluate", overrides=["benchmark=humaneval"])
    assert fix.start == "given" and mutants.start == "given" and plain.start == "sample"
    assert fix.benchmark.loader._target_ == "selfdebug.problems.load_humanevalpack"
    assert mutants.benchmark.loader._target_ == "selfdebug.evaluate.mutants.load_mbpp_mutants"
    assert mutants.benchmark.loader.limit == 5 and mutants.benchmark.loader.sandbox.timeout == 3
    assert mutants.benchmark.loader.split == "test" and mutants.benchmark.loader.per_problem == 1


@pytest.mark.slow
def test_tiny_model_refines_given_mutants(tmp_path, tiny_cache_dir):
    proc = evaluate(tmp_path, "model=tiny", "benchmark=mbpp_mutants", "limit=2", "n_samples=2", "rounds=1", "ks=[1]",
                    "sampling.max_new_tokens=16", f"model.generator.tiny_cache_dir={tiny_cache_dir}",
                    f"benchmark.loader.cache_dir={tmp_path / 'cache'}", "logger=none")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)
    assert res["rounds"][0]["pass@1"]["value"] == 0.0 and res["rounds"][1]["n_programs"] == 4


def test_start_given_on_a_benchmark_without_wrong_programs(tmp_path):
    proc = evaluate(tmp_path, "benchmark=humaneval", "start=given", "model=reference", "limit=2", "logger=none")
    assert_clean_failure(proc, tmp_path, r"start = given: problem HumanEval/0 .*no given wrong program")
    assert proc.returncode == 2


def test_unknown_start(tmp_path):
    proc = evaluate(tmp_path, "start=resume", "model=reference", "limit=1", "logger=none")
    assert_clean_failure(proc, tmp_path, r"start = 'resume'")
    assert proc.returncode == 2


@pytest.mark.parametrize("override, pattern", [
    ("n_samples=0", r"error: n_samples = 0; it must be at least 1"),
    ("limit=0", r"error: limit = 0; it must be a positive number of problems"),
    ("explanation_score=maybe", r"error: explanation_score = 'maybe'; choose auto"),
    # HumanEval+ ships no file: its path is ??? in conf/, a traceback from the loader before it was checked.
    ("benchmark=humaneval_plus", r"error: benchmark\.loader\.path: required and not set"),
])
def test_a_bad_setting_fails_before_torch_is_imported(tmp_path, override, pattern):
    # Checked before the seeding (which loads torch), the benchmark and the model: about a second.
    proc, imported = run_profiled("selfdebug.evaluate", f"hydra.run.dir={tmp_path}", "+exp=eval_quickstart", override)
    assert "selfdebug.evaluate.app" in imported, proc.stderr[-2000:]
    assert not HEAVY_MODULES & imported
    assert_clean_failure(proc, tmp_path, pattern)
    assert proc.returncode == 2 and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("override, pattern", [
    ("benchmark.loader.per_problem=0", r"benchmark\.loader\.per_problem = 0"),
    ("benchmark.loader.split=train", r"benchmark\.loader\.split = 'train': training data comes from it"),
    ("benchmark.loader.operators=[nosuch]", r"benchmark\.loader\.operators: unknown mutation operator"),
])
def test_bad_mutant_settings(tmp_path, override, pattern):
    proc = evaluate(tmp_path, "benchmark=mbpp_mutants", override, "model=reference", "limit=1", "logger=none",
                    f"benchmark.loader.cache_dir={tmp_path / 'cache'}")
    assert_clean_failure(proc, tmp_path, pattern)
    assert proc.returncode == 2 and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_reference_repairs_all_of_humanevalfix(tmp_path):
    proc = evaluate(tmp_path, "benchmark=humanevalfix", "model=reference", "n_samples=1", "rounds=1", "ks=[1]",
                    "logger=none")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)
    assert res["n_problems"] == 164 and [r["pass@1"]["value"] for r in res["rounds"]] == [0.0, 100.0]
    assert {k: e["n_problems"] for k, e in res["by_bug_type"].items()} == {
        "value misuse": 44, "missing logic": 33, "excess logic": 31, "operator misuse": 25, "variable misuse": 23,
        "function misuse": 8}


@pytest.mark.slow
def test_full_mbpp_mutant_benchmark(tmp_path):
    """Seed 0, one mutant per task: 499 of the 500 test tasks keep a failing mutant (MBPP/101's all pass)."""
    from selfdebug.evaluate.mutants import load_mbpp_mutants

    problems = load_mbpp_mutants(cache_dir=str(tmp_path))
    payload = json.loads(next(tmp_path.glob("mbpp_mutants-*.json")).read_text())
    assert len(problems) == payload["counts"]["kept"] >= 495
    assert all(p.metadata["split"] == "test" and 11 <= p.metadata["mbpp_task_id"] <= 510 for p in problems)
    assert len({p.metadata["source_task_id"] for p in problems}) == len(problems)


# ------------------------------------------------------------------ the paper's reported round, few-shot prompts

def late_fixer(problems, fixed_in_round_1: int):
    """Wrong code first; each refinement is wrong again (marked with its attempt number) until the third,
    except for the first ``fixed_in_round_1`` problems, which the first refinement fixes."""
    by_entry = {p.entry_point: (i, p) for i, p in enumerate(problems)}

    def respond(request):
        messages = request["messages"]
        index, problem = next(v for name, v in by_entry.items() if f"def {name}(" in messages[0]["content"])
        n = request.get("n", 1)
        if len(messages) == 1:
            return [f"```python\ndef {problem.entry_point}(*args, **kwargs):\n    return None\n```"] * n
        previous = re.findall(r"# attempt (\d+)", messages[1]["content"])  # the program being refined
        attempt = int(previous[-1]) + 1 if previous else 1
        if attempt == 3 or index < fixed_in_round_1:
            return [f"Fixed.\n```python\n{problem.reference}\n```"] * n
        wrong = f"def {problem.entry_point}(*args, **kwargs):\n    return None  # attempt {attempt}"
        return [f"Still wrong.\n```python\n{wrong}\n```"] * n

    return respond


def test_results_report_round_one_as_the_paper_does(tmp_path):
    """Tables 2-4 are one round of refinement: results.json's headline figures are round 1's, the later
    rounds stay in ``rounds`` and in the ``_final`` figures."""
    problems = load_humaneval()[:3]
    with FakeOpenAIServer(late_fixer(problems, fixed_in_round_1=1)) as server:
        proc = evaluate(tmp_path, "model=openai", "model.model=late", f"model.base_url={server.base_url}", "limit=3",
                        "n_samples=1", "rounds=3", "ks=[1]", "logger=none")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)
    assert [round(r["pass@1"]["value"], 2) for r in res["rounds"]] == [0.0, 33.33, 33.33, 100.0]
    assert round(res["success_refinement_rate"], 2) == 33.33 and res["success_refinement_rate_final"] == 100.0
    assert round(res["pass@k_round1"]["pass@1"], 2) == 33.33 and res["pass@k_final"]["pass@1"] == 100.0
    assert "pass@1 0.00 -> 33.33 (round 1)" in proc.stdout


def test_paper_eval_preset_samples_at_temperature_only():
    from hydra import compose, initialize_config_dir

    import selfdebug.core.cli  # noqa: F401 - registers the sanitize resolver

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["+exp=paper_eval"])
        base = compose("evaluate", overrides=["+exp=paper_eval_base", "model=codellama_7b"])
    for c in (cfg, base):
        assert (c.n_samples, c.rounds, list(c.ks)) == (100, 3, [1, 10])
        assert c.sampling.temperature == 0.8 and c.sampling.top_p == 1.0
        assert c.refine_sampling.temperature == 0.8 and c.refine_sampling.top_p == 1.0
    assert cfg.few_shot == 0 and base.few_shot == 3 and base.model.chat_format == "starchat"


@pytest.mark.slow
def test_few_shot_initial_prompt_never_shows_the_evaluated_problem(tmp_path):
    """few_shot=3 on MBPP's prompt split (the pool the examples come from): each request carries three worked
    examples with their reference solutions, and never the problem it asks about."""
    from selfdebug.problems import load_mbpp

    pool = load_mbpp(None, split="prompt")
    with FakeOpenAIServer(lambda request: ["```python\npass\n```"] * request.get("n", 1)) as server:
        proc = evaluate(tmp_path, "model=openai", "model.model=fs", f"model.base_url={server.base_url}",
                        "benchmark=mbpp", "benchmark.loader.split=prompt", "limit=4", "n_samples=1", "rounds=0", "ks=[1]",
                        "few_shot=3", "logger=none")
        requests = [r.json["messages"] for r in server.chat_requests]
    assert proc.returncode == 0, proc.stderr
    assert len(requests) == 4
    asked_about = []
    for messages in requests:  # requests go out concurrently: match each to its problem by what it asks
        assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
        (problem,) = [p for p in pool[:4] if p.prompt in messages[-1]["content"]]
        asked_about.append(problem.task_id)
        shown = "\n".join(m["content"] for m in messages[:-1])
        assert problem.prompt not in shown and problem.reference.strip() not in shown
        expected = [p for p in pool if p.task_id != problem.task_id][:3]
        assert all(p.reference.strip() in shown for p in expected)
    assert sorted(asked_about) == sorted(p.task_id for p in pool[:4])
    assert results(tmp_path)["few_shot"] == 3
    bad = evaluate(tmp_path / "bad", "model=reference", "limit=1", "few_shot=10", "logger=none")
    assert bad.returncode == 2 and "few_shot = 10" in bad.stderr
