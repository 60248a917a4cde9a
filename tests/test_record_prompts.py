"""Collected records rebuild the prompt they were collected with (selfdebug.train.data.record_problem): the
starter code and shown tests travel in the record, so SFT and RL train on APPS prompts exactly as collected."""

from __future__ import annotations

import json

import pytest

from selfdebug.core.prompts import initial_messages, refine_messages, render_chat
from selfdebug.train.data import load_records


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    return tiny_lm[1]



# ------------------------------------------------------------------ records rebuild the collection-time prompt

APPS_ROWS = [
    {"problem_id": 1, "question": "Return the sum of the positive numbers in nums.",
     "starter_code": "class Solution:\n    def total(self, nums: list) -> int:\n        ",
     "solutions": json.dumps([("class Solution:\n    def total(self, nums: list) -> int:\n        s = 0\n"
                               "        for x in nums:\n            if x > 0:\n                s += x\n        return s\n")]),
     "input_output": json.dumps({"fn_name": "total", "inputs": [[[1, 2]], [[-1, 5]], [[0, -3]]],
                                 "outputs": [3, 5, 0]}), "difficulty": "introductory"},
    {"problem_id": 2, "question": "Return the largest gap between neighbours of nums.",
     "starter_code": "class Solution:\n    def gap(self, nums: list) -> int:\n        ",
     "solutions": json.dumps([("class Solution:\n    def gap(self, nums: list) -> int:\n        best = 0\n"
                               "        for i in range(1, len(nums)):\n            best = max(best, abs(nums[i] - "
                               "nums[i - 1]))\n        return best\n")]),
     "input_output": json.dumps({"fn_name": "gap", "inputs": [[[1, 4, 2]], [[5]], [[0, -3, 3]]],
                                 "outputs": [3, 0, 6]}), "difficulty": "introductory"},
]


@pytest.mark.slow
def test_apps_records_rebuild_the_prompt_collection_used(tmp_path, tokenizer):
    """An APPS-like problem with starter code, collected for real: the record rebuilds the very prompt the
    teacher was asked (refinement) and the student saw (code generation), so SFT and RL train on it."""
    from selfdebug.collect.teachers.base import WrongSolution
    from selfdebug.collect.teachers.llm import LLMTeacher
    from selfdebug.generation import ReferenceGenerator
    from selfdebug.problems import load_apps
    from selfdebug.train.data import codegen_example, trajectory_example
    from tests.test_collect import collect

    data = tmp_path / "apps.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in APPS_ROWS))
    problems = {p.task_id: p for p in load_apps(data)}
    assert all(p.starter_code and p.entry_point for p in problems.values())
    run = tmp_path / "run"
    proc = collect(run, "+exp=collect_quickstart", "data=apps_train", f"data.sources.apps.path={data}",
                   "n_initial=0", "decontamination.enabled=false", "logger=none", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trajectories, _ = load_records(run)
    assert trajectories
    teacher = LLMTeacher(ReferenceGenerator())
    for where, rec in trajectories:
        problem = problems[rec["problem_id"]]
        assert rec["starter_code"] == problem.starter_code and rec["tests_shown"] == list(problem.tests_shown)
        wrong = WrongSolution(rec["wrong_id"], problem, rec["wrong_code"], rec["feedback"], rec["wrong_status"],
                              rec["wrong_n_passed"], rec["n_tests"], rec["wrong_origin"])
        asked = teacher.messages(wrong)  # what the teacher was sent at collection time
        assert "Complete the following code:" in asked[0]["content"]
        for kind in ("refine", "explain_refine"):
            example = trajectory_example(where, rec, kind)
            assert example.messages == refine_messages(problem, rec["wrong_code"], rec["feedback"], kind)
        example = trajectory_example(where, rec, "explain_refine")
        assert example.messages == asked
        assert render_chat(example.messages, tokenizer) == render_chat(asked, tokenizer)
        gen = codegen_example(where, {**rec, "code": rec["refinement"]})
        assert gen.messages == initial_messages(problem)
