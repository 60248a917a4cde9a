"""The in-training repair evaluation (``selfdebug.train.repair_eval``): scoring answers in the real sandbox,
the callback in real SFT and PPO runs of the tiny model, resume without duplicate rows, and bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from selfdebug.core.answers import edit_answer
from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import assemble_program
from selfdebug.execution import Sandbox
from selfdebug.train.app import run
from selfdebug.train.repair_eval import build_repair_set, judge_answers, read_rows
from selfdebug.train.repair_settings import RepairEvalSettings, repair_eval_settings
from tests.conftest import REPO
from tests.test_sft_data import write_sft_dataset

CONF = REPO / "conf"
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SMALL = ["limit=6", "max_new_tokens=8", "batch_size=4"]  # a few held-out programs, short answers: seconds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_sft_dataset(tmp_path_factory.mktemp("repair") / "dataset")


def config(*overrides: str, exp: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"+exp={exp}", *overrides])


def quiet(dataset: Path, tiny_cache_dir: Path) -> list[str]:
    return [f"dataset.path={dataset}", "logger=none", "progress=false", "trainer.enable_progress_bar=false",
            f"model.generator.tiny_cache_dir={tiny_cache_dir}"]


def small(stage: str, every: int) -> list[str]:
    return [f"{stage}.repair_eval.every={every}", *(f"{stage}.repair_eval.{kv}" for kv in SMALL)]


def repair_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "repair/pass@1" in r]


# ------------------------------------------------------------------------------------------------ scoring

@pytest.mark.parametrize("form", ["full", "line"])
def test_the_correct_edit_scores_100_and_a_wrong_one_0(tiny_lm, form):
    """Model-free answers: the edit back to the MBPP reference repairs every mutant; the mutant itself none."""
    _, tokenizer = tiny_lm
    with Sandbox(timeout=5.0) as sandbox:
        items, _ = build_repair_set(RepairEvalSettings(limit=6), tokenizer, form, sandbox)
        fixes = [edit_answer(it.wrong_program, assemble_program(it.problem, it.problem.reference), form)
                 for it in items]
        items = [it for it, fix in zip(items, fixes) if fix is not None]  # `line` cannot say every edit
        fixes = [fix for fix in fixes if fix is not None]
        assert len(items) >= 2
        right = judge_answers(items, [f"The mutation broke it.\n{fix}" for fix in fixes], form, sandbox)
        assert right["pass@1"] == 100.0 and right["applied"] == 1.0
        assert all(r["passed"] for r in right["rows"])
        wrong = judge_answers(items, [edit_answer(it.wrong_program, it.wrong_program, "full") for it in items],
                              "full", sandbox)
        assert wrong["pass@1"] == 0.0 and wrong["applied"] == 1.0
        nothing = judge_answers(items, ["I do not know."] * len(items), form, sandbox)
        assert nothing["pass@1"] == 0.0 and nothing["applied"] == 0.0


def test_answers_run_under_each_problem_time_limit(tiny_lm):
    """A right fix that sleeps 1.5 s times out under a 0.5 s floor (these references take milliseconds) and
    passes under the flat sandbox timeout."""
    _, tokenizer = tiny_lm
    with Sandbox(timeout=5.0) as sandbox:
        scaled, _ = build_repair_set(RepairEvalSettings(limit=3, min_timeout=0.5), tokenizer, "full", sandbox)
        flat, _ = build_repair_set(RepairEvalSettings(limit=3, timeout_factor=None), tokenizer, "full", sandbox)
        assert scaled and all(0.5 <= it.time_limit < 1.5 for it in scaled), [it.time_limit for it in scaled]
        assert all(it.time_limit is None for it in flat)
        slow = [edit_answer(it.wrong_program, "import time\ntime.sleep(1.5)\n"
                            + assemble_program(it.problem, it.problem.reference), "full") for it in scaled]
        timed_out = judge_answers(scaled, slow, "full", sandbox)
        assert timed_out["pass@1"] == 0.0 and {r["status"] for r in timed_out["rows"]} == {"timeout"}
        assert judge_answers(flat, slow, "full", sandbox)["pass@1"] == 100.0


def test_held_out_prompts_are_refinement_prompts_with_feedback(tiny_lm):
    _, tokenizer = tiny_lm
    with Sandbox(timeout=5.0) as sandbox:
        items, too_long = build_repair_set(RepairEvalSettings(limit=4), tokenizer, "full", sandbox)
    assert items and too_long == 0
    text = tokenizer.decode(items[0].prompt_ids)
    assert "Execution feedback:" in text and "First explain briefly" in text
    assert items[0].problem.task_id.startswith("MBPP/") and items[0].feedback.strip()


def test_the_validation_split_gives_a_development_set_apart_from_test(tiny_lm):
    """repair_eval.split=validation: mutants of MBPP tasks 511-600, none of them a test task (11-510)."""
    _, tokenizer = tiny_lm
    with Sandbox(timeout=5.0) as sandbox:
        items, _ = build_repair_set(RepairEvalSettings(split="validation", limit=3), tokenizer, "full", sandbox)
    ids = [int(it.problem.task_id.split("/")[1]) for it in items]
    assert items and all(511 <= i <= 600 for i in ids), ids


def test_settings_are_checked():
    assert repair_eval_settings(None, "sft.repair_eval").every == 0
    for value, words in (({"every": -1}, "sft.repair_eval.every = -1"), ({"limit": 0}, "sft.repair_eval.limit = 0"),
                         ({"mode": "guess"}, "sft.repair_eval.mode = 'guess'"),
                         ({"split": "train"},
                          r"sft.repair_eval.split = 'train'; choose one of \['test', 'validation'\]"),
                         ({"evry": 2}, "sft.repair_eval.evry: no such setting"),
                         ({"timeout_factor": 0}, "sft.repair_eval.timeout_factor = 0"),
                         ({"min_timeout": "soon"}, "sft.repair_eval.min_timeout = 'soon'")):
        with pytest.raises(ConfigError, match=words):
            repair_eval_settings(value, "sft.repair_eval")


def test_rows_are_read_once_per_step(tmp_path):
    path = tmp_path / "repair_eval.jsonl"
    path.write_text('{"step": 0, "v": 1}\n{"step": 2, "v": 1}\n{"step": 2, "v": 2}\n{"step": 4, "v"')
    assert [(r["step"], r["v"]) for r in read_rows(path)] == [(0, 1), (2, 2)]


# ------------------------------------------------------------------------------------------------ in training

@pytest.mark.slow
def test_sft_logs_the_repair_rate_at_the_expected_steps_and_resumes_without_duplicates(
        tmp_path, dataset, tiny_cache_dir, one_thread):
    common = [*quiet(dataset, tiny_cache_dir), "sft.max_steps=5", "sft.eval_every=0", "sft.checkpoint_every=2",
              *small("sft", 2)]
    first = run(config(*common, "sft.stop_after=3", exp="sft_quickstart"), tmp_path)
    assert not first["finished"]
    assert [r["step"] for r in read_rows(tmp_path / "repair_eval.jsonl")] == [0, 2, 3]
    second = run(config(*common, exp="sft_quickstart"), tmp_path)  # resumes from step-3 (checkpoint at 3)
    assert second["finished"]
    rows = read_rows(tmp_path / "repair_eval.jsonl")
    lines = (tmp_path / "repair_eval.jsonl").read_text().splitlines()
    assert [r["step"] for r in rows] == [0, 2, 3, 4, 5] and len(lines) == len(rows)
    for r in rows:
        assert 0.0 <= r["repair/pass@1"] <= 100.0 and 0.0 <= r["repair/applied"] <= 1.0
        assert r["repair/problems"] >= 3 and r["stage"] == "sft" and r["mode"] == "explain_refine"
        assert r["split"] == "test"
    logged = repair_metrics(tmp_path)
    assert sorted(r["step"] for r in logged) == [0, 2, 3, 4, 5]


@pytest.mark.slow
def test_ppo_logs_the_repair_rate_per_ppo_step(tmp_path, dataset, tiny_cache_dir, one_thread):
    cfg = config(*quiet(dataset, tiny_cache_dir), "rl.total_steps=3", "rl.batch_size=4",
                 "rl.generation_batch_size=4", "rl.mini_batch_size=4", "rl.ppo_epochs=1", "rl.max_new_tokens=16",
                 "rl.table_every=0", *small("rl", 2), exp="rl_quickstart")
    summary = run(cfg, tmp_path)
    assert summary["finished"]
    rows = read_rows(tmp_path / "repair_eval.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 3] and {r["stage"] for r in rows} == {"rl"}
    assert sorted(r["step"] for r in repair_metrics(tmp_path)) == [0, 2, 3]


def test_off_by_default_writes_nothing(tmp_path, dataset, tiny_cache_dir, one_thread):
    run(config(*quiet(dataset, tiny_cache_dir), "sft.max_steps=1", "sft.eval_every=0", exp="sft_quickstart"),
        tmp_path)
    assert not (tmp_path / "repair_eval.jsonl").exists() and not repair_metrics(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("exp, override, words", [
    ("sft_quickstart", "sft.repair_eval.every=-2", r"error: sft\.repair_eval\.every = -2; it must be an integer >= 0"),
    ("rl_quickstart", "rl.repair_eval.mode=guess", r"error: rl\.repair_eval\.mode = 'guess'; choose one of")])
def test_bad_settings_exit_2_naming_the_key(tmp_path, dataset, tiny_cache_dir, exp, override, words):
    import re

    cmd = [sys.executable, "-m", "selfdebug.train", f"hydra.run.dir={tmp_path}", f"+exp={exp}",
           *quiet(dataset, tiny_cache_dir), override]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV, check=False)
    assert proc.returncode == 2, proc.stderr
    assert re.search(words, proc.stderr) and "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()
