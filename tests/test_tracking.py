"""W&B conventions, checked on real offline runs read back from their ``.wandb`` files: one project, the group,
the ``group:choice`` tags, job types, sample tables, dataset and model artifacts, and a run id that survives a
restart in the same run dir."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import selfdebug.train  # noqa: F401 - registers the structured configs conf/train.yaml composes
from selfdebug.core.errors import ConfigError
from selfdebug.core.tracking import (
    RUN_ID_FILE,
    RunLogger,
    logger_from_config,
    run_group,
    run_name,
    run_tags,
    wandb_run_id,
)
from tests.conftest import REPO

CONF = REPO / "conf"
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------------ reading runs

def _records(path: Path):
    """The records of a ``.wandb`` file: a 7-byte header, then a LevelDB-style log of 32 KiB blocks whose
    records (crc32, length, type) carry protobuf ``Record`` messages, possibly split across blocks."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B datastore file"
    pos, block, pending = 7, 32 * 1024, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk


def offline_runs(run_dir: Path) -> list[dict]:
    """Every offline W&B run under ``run_dir/wandb`` (oldest first), as the fields these tests check."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for folder in sorted(Path(run_dir, "wandb").glob("offline-run-*")):
        info = {"folder": folder, "artifacts": []}
        for raw in _records(next(folder.glob("run-*.wandb"))):
            rec = pb.Record()
            rec.ParseFromString(raw)
            kind = rec.WhichOneof("record_type")
            if kind == "run" and "id" not in info:
                r = rec.run
                info.update(id=r.run_id, project=r.project, group=r.run_group, tags=list(r.tags),
                            job_type=r.job_type, name=r.display_name,
                            config={i.key: i.value_json for i in r.config.update})
            elif kind == "artifact":
                a = rec.artifact
                info["artifacts"].append({"name": a.name, "type": a.type,
                                          "paths": sorted(e.path for e in a.manifest.contents),
                                          "refs": sorted(e.ref for e in a.manifest.contents if e.ref)})
        runs.append(info)
    return runs


# ------------------------------------------------------------------------------------------------ conventions

def hydra_node(*overrides: str, config: str = "train"):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config, overrides=list(overrides), return_hydra_config=True)


def test_tags_are_the_config_choices_and_the_stage():
    cfg = hydra_node("+exp=rl_quickstart", "reward=no_codebleu")
    from selfdebug.core.tracking import hydra_choices

    tags = run_tags(hydra_choices(cfg.hydra), "rl", ["mine"])
    assert {"exp:rl_quickstart", "model:tiny", "reward:no_codebleu", "trainer:cpu", "peft:none", "stage:rl",
            "mine"} <= set(tags)
    assert not [t for t in tags if t.startswith(("hydra/", "logger:"))]
    assert all(len(t) <= 64 for t in run_tags({"model": "x" * 100}, "sft"))


def test_group_is_the_logger_key_else_the_sweep_else_the_experiment(tmp_path):
    hc = hydra_node("+exp=sft_quickstart").hydra
    assert run_group(None, hc) == "sft_quickstart"
    assert run_group("mine", hc) == "mine"
    assert run_name(None, "sft", hc) is None
    assert run_group(None, hydra_node().hydra) is None  # no experiment, no sweep: ungrouped

    from hydra.types import RunMode

    sweep = tmp_path / "reward_weights"
    sweep.mkdir()
    OmegaConf.save({"hydra": {"overrides": {"task": ["+exp=rl_quickstart", "reward.weights.explanation=0,0.5",
                                                     "seed=1,2", "dataset.path=/a/long/path"]}}},
                   sweep / "multirun.yaml")  # what Hydra writes at the start of a --multirun
    with open_dict(hc):
        hc.mode = RunMode.MULTIRUN
        hc.sweep.dir = str(sweep)
        hc.job.num = 3
        hc.overrides.task = ["+exp=rl_quickstart", "reward.weights.explanation=0.5", "seed=2",
                             "dataset.path=/a/long/path"]
    assert run_group(None, hc) == "sweep-reward_weights"
    assert run_name(None, "rl", hc) == "rl:reward.weights.explanation=0.5,seed=2"  # the swept keys only
    (sweep / "multirun.yaml").unlink()
    assert run_name(None, "rl", hc) == "rl:3"  # the job number when the sweep's command line is unknown


def test_run_id_is_kept_in_the_run_dir_and_a_sweep_agents_id_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    first = wandb_run_id(tmp_path)
    assert first == wandb_run_id(tmp_path) == (tmp_path / RUN_ID_FILE).read_text().strip()
    assert first != wandb_run_id(tmp_path / "other")
    monkeypatch.setenv("WANDB_RUN_ID", "agent123")  # `wandb agent` names the run it starts
    assert wandb_run_id(tmp_path) == "agent123" == (tmp_path / RUN_ID_FILE).read_text().strip()


def test_a_bad_artifact_policy_names_the_key(tmp_path):
    cfg = hydra_node("logger.artifacts.model=upload_all")
    with pytest.raises(ConfigError, match=r"logger\.artifacts\.model = 'upload_all'"):
        logger_from_config(cfg, tmp_path, {}, job_type="sft")


# ------------------------------------------------------------------------------------------------ real offline runs

def test_offline_run_holds_group_tags_table_and_artifacts_and_a_restart_continues_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    data, model = tmp_path / "dataset", tmp_path / "model"
    data.mkdir()
    model.mkdir()
    (data / "part-00000.jsonl").write_text('{"id": 1}\n')
    (model / "config.json").write_text("{}\n")
    run_dir = tmp_path / "run"
    kwargs = {"group": "g", "tags": ["model:tiny", "stage:sft"], "job_type": "sft", "artifacts": {"model": "reference"}}

    logger = RunLogger(run_dir, {"sft": {"lr": 0.1}}, **kwargs)
    logger.log({"train/loss": 1.0}, step=1)
    logger.table("heldout/samples", ["prompt", "answer"], [["p", "a"]])
    assert logger.artifact(data, name="mbpp train/tiny", type="dataset")  # policy: upload (the default)
    assert logger.artifact(model, name="sft-tiny", type="model")
    assert not logger.artifact(model, name="x", type="model", policy="none")
    logger.finish(1)  # as a preempted job ends
    time.sleep(1.1)  # offline run folders are named to the second; a requeued job takes far longer to return
    logger = RunLogger(run_dir, {"sft": {"lr": 0.1}}, **kwargs)  # the requeued job, same run dir
    logger.log({"train/loss": 0.5}, step=2)
    logger.finish(0)
    import wandb

    wandb.teardown()  # the W&B service writes the .wandb files after finish() returns; this waits for it

    runs = offline_runs(run_dir)
    assert len(runs) == 2
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    for run in runs:
        assert (run["id"], run["project"], run["group"], run["job_type"]) == (run_id, "selfdebug", "g", "sft")
        assert run["tags"] == ["model:tiny", "stage:sft"]
        assert run["folder"].name.endswith(run_id)
    arts = {a["type"]: a for a in runs[0]["artifacts"]}
    assert arts["dataset"]["name"] == "mbpp_train_tiny" and arts["dataset"]["paths"] == ["part-00000.jsonl"]
    assert arts["dataset"]["refs"] == []  # uploaded at `wandb sync`, not linked
    assert arts["model"]["name"] == "sft-tiny" and arts["model"]["refs"] == [(model / "config.json").as_uri()]
    assert any(a["type"] == "run_table" and a["paths"] == ["heldout/samples.table.json"]
               for a in runs[0]["artifacts"])
    assert [a for a in runs[0]["artifacts"] if a["name"] == "x"] == []


@pytest.mark.slow
def test_collect_and_evaluate_runs_follow_the_conventions(tmp_path):
    """The real entry points: tags from Hydra's choices, group from the experiment, job types, the dataset
    artifact (offline) and the evaluation's sample table."""
    collect_dir, eval_dir = tmp_path / "collect", tmp_path / "evaluate"
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.collect", f"hydra.run.dir={collect_dir}", "+exp=collect_quickstart",
         "data.limit_per_source=8", "n_initial=1", "initial_sampling.max_new_tokens=16", "progress=false"],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.evaluate", f"hydra.run.dir={eval_dir}", "+exp=eval_quickstart", "limit=2",
         "n_samples=1", "rounds=1", "ks=[1]", "sampling.max_new_tokens=16", "label=base", "progress=false"],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (collect,) = offline_runs(collect_dir)
    assert collect["group"] == "collect_quickstart" and collect["job_type"] == "collect"
    assert {"exp:collect_quickstart", "data:mbpp_train", "model:tiny", "teacher:mutation",
            "stage:collect"} <= set(collect["tags"])
    assert json.loads(collect["config"]["hydra_choices"])["teacher"] == "mutation"
    (dataset,) = [a for a in collect["artifacts"] if a["type"] == "dataset"]
    assert dataset["name"] == "mbpp_train-tiny-mutation"
    assert "stats.json" in dataset["paths"] and any(p.startswith("trajectories/") for p in dataset["paths"])

    (evaluation,) = offline_runs(eval_dir)
    assert evaluation["group"] == "eval_quickstart" and evaluation["job_type"] == "evaluate"
    assert {"benchmark:humaneval", "model:tiny", "stage:evaluate", "label:base"} <= set(evaluation["tags"])
    assert any(a["type"] == "run_table" and a["paths"] == ["refinements.table.json"]
               for a in evaluation["artifacts"])


def test_dashboard_report_reads_the_metrics_the_runs_log():
    """Built locally (saving it needs a W&B login): the panels name the keys RunLogger writes."""
    pytest.importorskip("wandb_workspaces")
    import wandb_workspaces.reports.v2 as wr

    from selfdebug.analysis.dashboard import build_report

    report = build_report("me", group="sweep-x")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert [g.runsets[0].filters for g in grids] == [
        f"Metric('JobType') == '{job}' and Metric('Group') == 'sweep-x'" for job in ("evaluate", "rl", "sft", "rl")]
    panels = [p for g in grids for p in g.panels]
    bars = [p for p in panels if isinstance(p, wr.BarPlot)]
    assert [m.name for m in bars[0].metrics] == [f"round_{r}/pass@1" for r in range(4)]
    lines = {y for p in panels if isinstance(p, wr.LinePlot) for y in p.y}
    assert {"reward/r_code", "reward/r_expl", "objective/kl", "objective/entropy", "train/loss"} <= lines
    assert {p.table_name for p in panels if isinstance(p, wr.WeavePanelSummaryTable)} == {
        "refinements", "rollouts/samples", "heldout/samples"}
    (coords,) = [p for p in panels if isinstance(p, wr.ParallelCoordinatesPlot)]
    assert coords.columns[0].metric.name == "reward.weights.explanation"
