"""S_ex in evaluation (selfdebug/evaluate/explanation_score.py): the RL reward's explanation term, scored against
the mutation teacher's explanations of each mutant; real embedding model (bundled, offline) and real mutants."""

from __future__ import annotations

import pytest

from selfdebug.evaluate.explanation_score import (
    BUNDLED_NAME,
    ExplanationScoreSettings,
    load_reward,
    reference_explanations,
    score_rows,
)
from tests.test_evaluate import assert_clean_failure, evaluate, results, samples

FEEDBACK = "Test failed: assert f(3) == 6\nGot 5 instead."
UNRELATED = "The weather in Lisbon is warm and sunny in the summer months."


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    from selfdebug.evaluate.mutants import load_mbpp_mutants

    return load_mbpp_mutants(limit=3, seed=0, cache_dir=str(tmp_path_factory.mktemp("mutants")))


@pytest.fixture(scope="module")
def reward():
    return load_reward(ExplanationScoreSettings())


def rows_for(problem, explanations: list[str], feedback: str = FEEDBACK) -> list[dict]:
    """Round 0 (the given mutant, as the protocol writes it) and one round-1 row per explanation."""
    base = {"task_id": problem.task_id, "status": "failed", "n_passed": 0, "n_tests": 3, "passed": False}
    out = [{**base, "round": 0, "sample_index": i, "code": problem.given_program, "completion": "",
            "feedback": feedback, "explanation": None} for i in range(len(explanations))]
    out += [{**base, "round": 1, "sample_index": i, "code": problem.reference, "completion": "", "feedback": "",
             "explanation": text} for i, text in enumerate(explanations)]
    return out


@pytest.mark.slow
def test_teacher_explanation_scores_one_and_unrelated_text_lower(mutants, reward):
    problem = mutants[0]
    one = ExplanationScoreSettings(m=1)
    own = reference_explanations(problem, FEEDBACK, one)[0]
    rows = rows_for(problem, [own, UNRELATED, ""])
    entry = score_rows(rows, [problem], one, reward=reward)
    s = [r["s_ex"] for r in rows if r["round"] == 1]
    assert s[0] == pytest.approx(1.0, abs=1e-4)  # its only reference is itself
    assert 0.0 <= s[1] < 0.5 and s[2] == 0.0  # unrelated: low; empty: 0, as in the reward
    assert entry["model"] == BUNDLED_NAME and entry["references"] == {"teacher": "mutation", "m": 1, "seed": 0}
    r1 = entry["round_1"]
    assert r1 == entry["rounds"]["1"] and r1["n"] == 3 and r1["n_empty"] == 1
    assert r1["mean"] == pytest.approx(sum(s) / 3) and r1["ci_low"] <= r1["mean"] <= r1["ci_high"]

    # With m=3 (the default): the teacher's explanation is near its siblings, the unrelated sentence is not,
    # and the value is the reward's own S_ex term on the same references.
    three = ExplanationScoreSettings()
    refs = reference_explanations(problem, FEEDBACK, three)
    assert len(refs) == 3 and own in refs
    rows = rows_for(problem, [own, UNRELATED])
    score_rows(rows, [problem], three, reward=reward)
    mine, other = (r["s_ex"] for r in rows if r["round"] == 1)
    assert mine > 0.6 and mine > other + 0.3
    assert mine == pytest.approx(max(0.0, reward.scorer.similarity(own, refs)), abs=1e-6)


@pytest.mark.slow
def test_later_rounds_and_problems_without_references(mutants, reward):
    from selfdebug.problems import load_humaneval

    problem, plain = mutants[0], load_humaneval()[0]
    own = reference_explanations(problem, FEEDBACK, ExplanationScoreSettings())[0]
    rows = rows_for(problem, [own, own]) + rows_for(plain, [own])
    # Round 2: sample 0 still explains the mutant (round 1 left it as it was); sample 1 explains another program.
    rows[2]["code"], rows[3]["code"] = problem.given_program, problem.reference + "\n\nX = 1\n"
    rows += [{**rows[2], "round": 2, "sample_index": 0, "explanation": own},
             {**rows[3], "round": 2, "sample_index": 1, "explanation": own}]
    entry = score_rows(rows, [problem, plain], ExplanationScoreSettings(), n_rounds=3, reward=reward)
    assert entry["rounds"]["1"]["n"] == 2 and entry["rounds"]["2"]["n"] == 1
    assert entry["rounds"]["2"]["n_other_program"] == 1
    assert entry["rounds"]["3"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "n_empty": 0,
                                    "n_other_program": 0}
    assert not any("s_ex" in r for r in rows if r["task_id"] == plain.task_id or r["round"] == 0)


@pytest.mark.slow
def test_reference_model_evaluation_reports_s_ex(tmp_path):
    from selfdebug.generation.reference import REFERENCE_EXPLANATION

    cache = f"benchmark.loader.cache_dir={tmp_path / 'cache'}"
    args = ("benchmark=mbpp_mutants", "model=reference", "n_samples=2", "rounds=2", "ks=[1]", "logger=none",
            "limit=3", cache)
    proc = evaluate(tmp_path / "a", *args)
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path / "a")
    entry = res["explanation_score"]
    n_wrong = res["n_problems"] * 2
    assert set(entry) == {"model", "references", "round_1", "rounds"} and entry["model"] == BUNDLED_NAME
    r1 = entry["round_1"]
    assert r1["n"] == n_wrong and r1["n_empty"] == 0 and 0.0 <= r1["ci_low"] <= r1["mean"] <= r1["ci_high"] < 0.5
    # Its one generic sentence says nothing about the bug: S_ex near 0. Round 2 has nothing left to refine.
    assert entry["rounds"]["2"]["n"] == 0
    assert "S_ex (" in proc.stdout and "round 1" in proc.stdout
    refined = [r for r in samples(tmp_path / "a") if r["round"] == 1]
    assert len(refined) == n_wrong and all(0.0 <= r["s_ex"] < 0.5 for r in refined)
    assert all(r["explanation"] == REFERENCE_EXPLANATION for r in refined)

    proc = evaluate(tmp_path / "b", *args, "mode=refine")
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path / "b")
    assert res["explanation_score"] is None and "mode = refine" in res["explanation_score_skipped"]


@pytest.mark.parametrize("overrides, pattern", [
    (("explanation_score=sometimes",), r"explanation_score = 'sometimes'"),
    (("explanation_model=''",), r"explanation_model = ''"),
    (("benchmark=humaneval", "explanation_score=true"), r"explanation_score = true, but no problem"),
])
def test_bad_settings_fail_before_any_model_loads(tmp_path, overrides, pattern):
    proc = evaluate(tmp_path, "model=reference", "limit=1", "logger=none", *overrides)
    assert_clean_failure(proc, tmp_path, pattern)
    assert proc.returncode == 2


@pytest.mark.slow
def test_an_embedding_model_that_does_not_load_names_the_key(tmp_path):
    proc = evaluate(tmp_path, "benchmark=mbpp_mutants", "model=reference", "limit=1", "logger=none",
                    f"benchmark.loader.cache_dir={tmp_path / 'cache'}", f"explanation_model={tmp_path / 'nothing'}")
    assert_clean_failure(proc, tmp_path, r"explanation_model = '.*nothing'")
    assert proc.returncode == 2
