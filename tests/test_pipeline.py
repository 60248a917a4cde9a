"""``python -m selfdebug.pipeline``: collect -> SFT -> RL -> evaluate -> report, killed in RL and resumed; the
base, SFT and RL models evaluated on two repair benchmarks side by side; bad ``evaluate.benchmarks`` entries."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import HEAVY_MODULES, REPO, run_profiled


def _list(key: str, items: list[str]) -> str:
    """A Hydra list override whose items are themselves overrides (quoted: they hold '=' and '+')."""
    return f"{key}=[" + ",".join(f'"{item}"' for item in items) + "]"


SMALL = ["+exp=quickstart", "model=tiny", "wandb=false",
         _list("collect.overrides", ["+exp=collect_quickstart", "data.limit_per_source=12", "n_initial=1"]),
         _list("sft.overrides", ["+exp=sft_quickstart", "sft.max_steps=6", "sft.eval_every=0",
                                 "sft.checkpoint_every=3"]),
         _list("rl.overrides", ["+exp=rl_quickstart", "rl.total_steps=6", "rl.checkpoint_every=1"]),
         _list("evaluate.overrides", ["limit=2", "n_samples=1", "rounds=1", "ks=[1]",
                                      "sampling.max_new_tokens=16"]),
         "evaluate.benchmarks=null"]  # one evaluation per model, in evaluate/<label> (the layout without benchmarks)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two whole pipeline runs: 148 s beside another xdist worker here, 2-3x that on slow CPUs
def test_pipeline_killed_during_rl_resumes_without_redoing_collection_or_sft(tmp_path):
    run_dir = tmp_path / "pipe"
    cmd = [sys.executable, "-m", "selfdebug.pipeline", f"hydra.run.dir={run_dir}", *SMALL]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    rl_checkpoints = run_dir / "rl" / "checkpoints"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if rl_checkpoints.is_dir() and any(rl_checkpoints.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the pipeline ended before RL wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "rl" / "model").exists()
    stamps = {p: p.stat().st_mtime_ns for p in [run_dir / "collect" / "dataset" / "stats.json",
                                               run_dir / "sft" / "model" / "selfdebug_sft.json"]}

    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "collect: complete output found" in done.stdout and "sft: complete output found" in done.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not redone
    assert (run_dir / "rl" / "model").is_dir()
    for label in ("base", "sft", "rl"):
        assert (run_dir / "evaluate" / label / "results.json").is_file()
    report = (run_dir / "report" / "report.md").read_text()
    assert all(f"| {label} |" in report for label in ("base", "sft", "rl"))
    assert "report:" in done.stdout


def _pipeline(run_dir, *overrides, timeout=900):
    return subprocess.run([sys.executable, "-m", "selfdebug.pipeline", f"hydra.run.dir={run_dir}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "WANDB_MODE": "offline"})


def _finished_training(run_dir, model_dir) -> None:
    """Collection, SFT and RL outputs as the stages leave them when complete (the tiny checkpoint standing in
    for the trained models), so the pipeline skips them and goes straight to the evaluations."""
    (run_dir / "collect" / "dataset").mkdir(parents=True)
    (run_dir / "collect" / "dataset" / "stats.json").write_text("{}\n")
    for stage in ("sft", "rl"):
        shutil.copytree(model_dir, run_dir / stage / "model")
        (run_dir / stage / "summary.json").write_text("{}\n")


@pytest.mark.slow
def test_pipeline_evaluates_base_sft_rl_on_two_benchmarks_and_reports_them_side_by_side(tmp_path):
    from selfdebug.core.models import ensure_tiny

    run_dir = tmp_path / "pipe"
    _finished_training(run_dir, ensure_tiny())
    overrides = ["+exp=quickstart", "model=tiny", "wandb=false",
                 _list("evaluate.overrides", ["n_samples=1", "rounds=1", "ks=[1]", "sampling.temperature=0",
                                              "sampling.max_new_tokens=8", "progress=false"]),
                 _list("evaluate.benchmarks.mbpp_mutants", ["benchmark=mbpp_mutants", "limit=2",
                                                            f"benchmark.loader.cache_dir={tmp_path / 'cache'}"]),
                 _list("evaluate.benchmarks.humanevalfix", ["benchmark=humanevalfix", "limit=2"])]
    done = _pipeline(run_dir, *overrides)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in ("collect", "sft", "rl"):
        assert f"{stage}: complete output found" in done.stdout
    results = {}
    for label in ("base", "sft", "rl"):
        for bench in ("mbpp_mutants", "humanevalfix"):
            path = run_dir / "evaluate" / label / bench / "results.json"
            results[bench, label] = json.loads(path.read_text())
            assert results[bench, label]["benchmark"] == bench and results[bench, label]["start"] == "given"
    # One verdict file for every evaluation: the given programs run once (for base, the first model; the mutants
    # already while their benchmark is built), the later models read their verdicts, and all three see the same
    # round-0 feedback.
    assert (run_dir / "evaluate" / "verdicts.sqlite").is_file()
    for bench in ("mbpp_mutants", "humanevalfix"):
        assert all(results[bench, label]["sandbox"]["cache_hits"] >= 2 for label in ("sft", "rl"))
        round0 = {label: [(r["task_id"], r["status"], r["feedback"]) for r in map(json.loads, (
            run_dir / "evaluate" / label / bench / "samples.jsonl").read_text().splitlines()) if r["round"] == 0]
            for label in ("base", "sft", "rl")}
        assert len(round0["base"]) == 2 and round0["base"] == round0["sft"] == round0["rl"]
    # The trained models are evaluated with the base model config's chat format.
    sft_config = (run_dir / "evaluate" / "sft" / "humanevalfix" / ".hydra" / "config.yaml").read_text()
    assert "chat_format: template" in sft_config

    table = json.loads((run_dir / "report" / "repair_table.json").read_text())
    order = [(r["benchmark"], r["model"]) for r in table["rows"]]
    assert order == [(b, m) for b in ("humanevalfix", "mbpp_mutants") for m in ("base", "sft", "rl")]
    md = (run_dir / "report" / "report.md").read_text()
    assert md.index("## Repair benchmarks: base vs SFT vs RL") < md.index("## Self-debugging (Table 2 layout)")
    for row in table["rows"]:
        res = results[row["benchmark"], row["model"]]
        after = res["rounds"][1]["pass@1"]
        assert row["problems"] == res["n_problems"] == 2
        assert row["pass@1_given"] == res["rounds"][0]["pass@1"]["value"] == 0.0
        assert row["pass@1_round1"] == {"value": after["value"], "low": after["ci_low"], "high": after["ci_high"]}
        assert row["refinement_rate_round1"] == res["rounds"][1]["refinement"]["cumulative_rate"]
        s_ex = (res.get("explanation_score") or {}).get("round_1")
        assert (row["s_ex_round1"] is None) == (s_ex is None or s_ex.get("mean") is None)
        s_ex_cell = "-" if row["s_ex_round1"] is None else (
            f"{s_ex['mean']:.3f} [{s_ex['ci_low']:.3f}, {s_ex['ci_high']:.3f}]")
        line = (f"| {row['benchmark']} | {row['model']} | 2 | 0.00 | {after['value']:.2f} "
                f"[{after['ci_low']:.2f}, {after['ci_high']:.2f}] | {row['refinement_rate_round1']:.2f} | {s_ex_cell} |")
        assert line in md, line
    assert "Repair benchmarks: base vs SFT vs RL" in (run_dir / "report" / "report.html").read_text()

    # The same command again: every stage is found complete, nothing is re-run.
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "evaluate").rglob("results.json")}
    again = _pipeline(run_dir, *overrides)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("complete output found") == 3 + 6
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.parametrize("overrides, key", [
    (["+exp=quickstart", "evaluate.benchmarks.humanevalfix='benchmark=humanevalfix'"], "evaluate.benchmarks.humanevalfix"),
    (["+exp=quickstart", "evaluate.benchmarks.humanevalfix=[1,2]"], "evaluate.benchmarks.humanevalfix"),
    (["evaluate.benchmarks=[a,b]"], "evaluate.benchmarks"),  # over the default null (no quickstart mapping)
])
def test_a_bad_benchmarks_entry_stops_the_pipeline_before_any_stage(tmp_path, overrides, key):
    done = _pipeline(tmp_path / "pipe", *overrides, "model=tiny", "wandb=false", timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"error: {key} = " in done.stderr
    assert "[pipeline]" not in done.stdout and not (tmp_path / "pipe" / "collect").exists()


@pytest.mark.parametrize("override, stage, keys, pattern", [
    (_list("collect.overrides", ["+exp=collect_quickstart", "mutants_per_problem=-1"]), "collect",
     "collect.overrides", r"mutants_per_problem = -1; it must be >= 0"),
    (_list("sft.overrides", ["+exp=sft_quickstart", "sft.lr=abc"]), "sft", "sft.overrides",
     r"Error merging override sft\.lr=abc\nValue 'abc' of type 'str' could not be converted to Float"),
    (_list("sft.overrides", ["+exp=sft_quickstart", "peft=nosuch"]), "sft", "sft.overrides",
     r"In 'train': Could not find 'peft/nosuch'\n\nAvailable options in 'peft':"),
    (_list("rl.overrides", ["+exp=rl_quickstart", "rl.lam=2"]), "rl", "rl.overrides",
     r"rl\.lam = 2\.0; it must be in \[0\.0, 1\.0\]"),
    (_list("evaluate.overrides", ["n_samples=0"]), "evaluate:base:mbpp_mutants",
     "evaluate.overrides, evaluate.benchmarks.mbpp_mutants", r"n_samples = 0; it must be at least 1"),
    (_list("evaluate.benchmarks.humanevalfix", ["benchmark=humanevalfix", "limit=0"]), "evaluate:base:humanevalfix",
     "evaluate.overrides, evaluate.benchmarks.humanevalfix", r"limit = 0; it must be a positive number"),
    # A mandatory value left unset (??? in conf/): HumanEval+ ships no file, model=hf names no checkpoint.
    (_list("+evaluate.benchmarks.hep", ["benchmark=humaneval_plus"]), "evaluate:base:hep",
     "evaluate.overrides, evaluate.benchmarks.hep",
     (r"benchmark\.loader\.path: required and not set \(\?\?\? in the config\); give it on the command line, "
      r"e\.g\. benchmark\.loader\.path=<value>")),
    (_list("sft.overrides", ["+exp=sft_quickstart", "model=hf"]), "sft", "sft.overrides",
     r"model\.name_or_path: required and not set"),
    # A data loader's arguments: checked against its signature and its own checks, without reading data.
    (_list("collect.overrides", ["+exp=collect_quickstart", "+data.sources.mbpp.spilt=train"]), "collect",
     "collect.overrides", r"data\.sources\.mbpp: selfdebug\.problems\.load_mbpp has no option 'spilt'; its options are "),
    (_list("evaluate.benchmarks.mbpp_mutants", ["benchmark=mbpp_mutants", "benchmark.loader.split=train"]),
     "evaluate:base:mbpp_mutants", "evaluate.overrides, evaluate.benchmarks.mbpp_mutants",
     r"benchmark\.loader\.split = 'train': training data comes from it"),
])
def test_a_bad_stage_override_stops_the_pipeline_before_any_stage_runs(tmp_path, override, stage, keys, pattern):
    # Each stage's config is composed and checked up front, as its command line will compose it: an RL typo
    # fails in a second instead of after collection and SFT (half an hour of the quickstart), torch not loaded.
    run_dir = tmp_path / "pipe"
    proc, imported = run_profiled("selfdebug.pipeline", f"hydra.run.dir={run_dir}", "+exp=quickstart", override)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(rf"error: stage {stage} \({keys}\): {pattern}", proc.stderr), proc.stderr[-2000:]
    assert "[pipeline]" not in proc.stdout
    assert {p.name for p in run_dir.iterdir()} <= {".hydra", "pipeline.log"}
    assert "selfdebug.collect.app" in imported and not HEAVY_MODULES & imported  # the first stage was checked


@pytest.mark.parametrize("overrides", [
    [], ["+exp=quickstart"], SMALL,
    ["+exp=quickstart", '+evaluate.benchmarks.mbpp_mutants_all=["benchmark=mbpp_mutants","limit=null"]'],
])
def test_the_shipped_pipelines_pass_their_stage_checks(tmp_path, overrides):
    # The default, the quickstart (README's main command), this file's small pipeline and the README table's:
    # every stage composes and passes its command line's checks, so none of them is stopped by check_stages.
    from hydra import compose, initialize_config_dir

    from selfdebug.core.cli import CONF_DIR
    from selfdebug.pipeline import check_stages, plan

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
        stages = plan(cfg, tmp_path, cfg.hydra.runtime.choices.model)
        check_stages(stages)
    names = [s.name for s in stages]
    assert names[:3] == ["collect", "sft", "rl"]
    assert len(names) == 3 + 3 * max(1, len(cfg.evaluate.benchmarks or {}))


def test_a_stage_input_that_no_stage_writes_stops_the_pipeline_before_any_stage_runs(tmp_path):
    # With collection or SFT switched off, the dataset / SFT model must already exist: a wrong path fails now,
    # not after the stages before the one that reads it. So must a data file or a local model a stage names.
    # A path an earlier stage will write is fine.
    run_dir, elsewhere = tmp_path / "pipe", tmp_path / "mine"
    (elsewhere / "dataset").mkdir(parents=True)
    rl = ["+exp=rl_quickstart", f"dataset.path={elsewhere / 'dataset'}"]
    nope = tmp_path / "nope"
    cases = [
        (["collect.enabled=false"], (rf"error: stage sft \(sft.overrides\): dataset\.path = '{run_dir}/collect/"
                                     r"dataset' does not exist, and no earlier stage of this pipeline writes it")),
        (["sft.enabled=false", _list("rl.overrides", [*rl, f"rl.sft_checkpoint={nope}"])],
         r"error: stage rl \(rl.overrides\): rl\.sft_checkpoint = '.*/nope' does not exist"),
        ([_list("collect.overrides", ["+exp=collect_quickstart", f"data.sources.mbpp.path={nope}/mbpp.jsonl"])],
         r"error: stage collect \(collect.overrides\): data\.sources\.mbpp\.path = '.*/nope/mbpp\.jsonl' does not"),
        ([_list("collect.overrides", ["+exp=collect_quickstart",
                                      f"decontamination.against.mbpp_test.path={nope}/t.jsonl"])],
         (r"error: stage collect \(collect.overrides\): decontamination\.against\.mbpp_test\.path = '.*/nope/t\.jsonl' "
          r"does not")),
        ([_list("sft.overrides", ["+exp=sft_quickstart", "model=hf", "model.name_or_path=outputs/no/such/model"])],
         r"error: stage sft \(sft.overrides\): model\.name_or_path = 'outputs/no/such/model' does not exist"),
        ([_list("+evaluate.benchmarks.hep", ["benchmark=humaneval_plus", f"benchmark.loader.path={nope}/he.jsonl"])],
         (r"error: stage evaluate:base:hep \(evaluate.overrides, evaluate.benchmarks.hep\): benchmark\.loader\.path "
          r"= '.*/nope/he\.jsonl' does not exist")),
    ]
    for overrides, pattern in cases:
        proc = _pipeline(run_dir, "+exp=quickstart", "dry_run=true", *overrides, timeout=120)
        assert proc.returncode == 2 and re.search(pattern, proc.stderr), proc.stderr[-2000:]
        assert "[pipeline]" not in proc.stdout and not (run_dir / "collect").exists()
    # Collection off, SFT and RL on a dataset of the user's: SFT's model is RL's input, written by SFT first.
    ok = _pipeline(run_dir, "+exp=quickstart", "dry_run=true", "collect.enabled=false",
                   _list("sft.overrides", ["+exp=sft_quickstart", f"dataset.path={elsewhere / 'dataset'}"]),
                   _list("rl.overrides", rl), timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"rl: would run: python -m selfdebug.train hydra.run.dir={run_dir}/rl" in ok.stdout


def test_a_dry_run_prints_each_stages_command_and_runs_none(tmp_path):
    # dry_run=true: the stages are checked and their command lines printed, marked complete or to run. Run by
    # hand, a printed command does the stage's work where the pipeline will look for it, and a second dry run
    # then finds that stage complete.
    from selfdebug.core.models import ensure_tiny

    run_dir = tmp_path / "pipe"
    _finished_training(run_dir, ensure_tiny())
    overrides = ["+exp=quickstart", "model=tiny", "wandb=false", "evaluate.benchmarks=null",
                 _list("evaluate.overrides", ["limit=2", "n_samples=1", "rounds=1", "ks=[1]",
                                              "sampling.max_new_tokens=8", "progress=false"])]
    dry = _pipeline(run_dir, *overrides, "dry_run=true", timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    lines = {m.group(1): (m.group(2), m.group(3))
             for m in re.finditer(r"^\[pipeline\] (\S+): (would run|complete output found in \S+): (.*)$", dry.stdout,
                                  re.MULTILINE)}
    assert list(lines) == ["collect", "sft", "rl", "evaluate:base", "evaluate:sft", "evaluate:rl"]
    assert [state == "would run" for state, _ in lines.values()] == [False] * 3 + [True] * 3
    assert not (run_dir / "evaluate").exists() and not (run_dir / "report").exists()

    command = lines["evaluate:base"][1]
    assert command.startswith("python -m selfdebug.evaluate hydra.run.dir=")
    by_hand = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=600,
                             check=False, env={**os.environ, "WANDB_MODE": "offline"})
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    assert json.loads((run_dir / "evaluate" / "base" / "results.json").read_text())["model"] == "tiny"
    again = _pipeline(run_dir, *overrides, "dry_run=true", timeout=300)
    assert "evaluate:base: complete output found" in again.stdout
    assert "evaluate:sft: would run" in again.stdout


def test_trained_models_keep_the_base_models_chat_format():
    from hydra import compose, initialize_config_dir

    from selfdebug.core.cli import CONF_DIR
    from selfdebug.pipeline import base_model_settings

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        quickstart = compose("pipeline", overrides=["+exp=quickstart"])
        tiny = compose("pipeline", overrides=["+exp=quickstart", "model=tiny", "model.answer_form=line"])
    assert base_model_settings(quickstart.model) == ["model.chat_format=starchat"]  # mini: StarChat turns
    assert base_model_settings(tiny.model) == ["model.chat_format=template", "model.answer_form=line"]
    assert dict(quickstart.evaluate.benchmarks) == {"mbpp_mutants": ["benchmark=mbpp_mutants", "limit=100"],
                                                    "humanevalfix": ["benchmark=humanevalfix", "limit=100"]}


def test_the_quickstarts_ppo_overrides_compose_into_the_papers_advantage():
    """The pipeline hands ``rl.overrides`` to ``selfdebug.train``: composed there they must be valid PPO settings,
    with the paper's advantage (gamma 0.99, GAE lambda 1) rather than rl_quickstart's TRL lambda 0.95, so that
    R_code on the final token reaches the explanation that names the faulty line."""
    from hydra import compose, initialize_config_dir

    from selfdebug.core.cli import CONF_DIR
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.train.settings import register_configs, settings_from

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        quickstart = compose("pipeline", overrides=["+exp=quickstart"])
        rl_overrides = [str(o) for o in quickstart.rl.overrides]
        stage = compose("train", overrides=["model=mini", "rl.sft_checkpoint=/some/sft/model", *rl_overrides])
        plain = compose("train", overrides=["model=mini", "rl.sft_checkpoint=/some/sft/model", "+exp=rl_quickstart"])
    settings = settings_from(PPOSettings, stage.rl, "rl")
    assert (settings.gamma, settings.lam) == (0.99, 1.0)
    assert (settings.total_steps, settings.batch_size, settings.lr) == (10, 16, 5e-5)
    assert settings_from(PPOSettings, plain.rl, "rl").lam == 0.95  # the tiny model's plumbing run keeps TRL's
