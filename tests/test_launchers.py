"""Hydra launchers: the launcher configs against the plugins, a real joblib sweep, and the SLURM requeue path on
submitit's local executor: a job preempted mid-training is requeued, resumes from its checkpoint in the same
run dir and continues the same W&B run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import REPO
from tests.test_sft_data import write_sft_dataset
from tests.test_tracking import offline_runs

CONF = REPO / "conf"
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
# Our launcher configs share their names with the plugins' schemas on purpose (see selfdebug/cli.py).
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*is validated against ConfigStore schema")


def launcher(name: str, *overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"hydra/launcher={name}", *overrides], return_hydra_config=True)


def test_slurm_launcher_keys_are_ones_submitit_takes():
    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    cfg = launcher("submitit_slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu")
    lcfg = cfg.hydra.launcher
    # The launcher hands the generic keys to AutoExecutor and the rest to SlurmExecutor; a key neither takes
    # would only fail on the cluster, at submission.
    own = {"_target_", "submitit_folder", "max_num_timeout"}
    unknown = set(lcfg) - own - AutoExecutor._valid_parameters() - SlurmExecutor._valid_parameters()
    assert not unknown
    assert lcfg.tasks_per_node == 4  # one task per GPU, as Lightning expects on SLURM
    assert lcfg.max_num_timeout > 0 and 0 < lcfg.signal_delay_s < lcfg.timeout_min * 60
    assert lcfg.partition == "gpu" and lcfg.submitit_folder.startswith(str(cfg.hydra.sweep.dir))
    instantiate(lcfg)  # the plugin's class takes them


def test_joblib_and_local_launchers_compose():
    assert launcher("joblib").hydra.launcher.n_jobs == 2
    instantiate(launcher("joblib").hydra.launcher)
    assert launcher("submitit_local").hydra.launcher._target_.endswith("LocalLauncher")


# ------------------------------------------------------------------------------------------------ real sweeps

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_sft_dataset(tmp_path_factory.mktemp("launch") / "dataset")


def sft_sweep(sweep: Path, dataset: Path, tiny_cache_dir: Path, launcher_name: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "selfdebug.train", "--multirun", f"hydra/launcher={launcher_name}",
            f"hydra.sweep.dir={sweep}", "+exp=sft_quickstart", f"dataset.path={dataset}", "progress=false",
            "trainer.enable_progress_bar=false", f"model.generator.tiny_cache_dir={tiny_cache_dir}", *overrides]


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_their_own_dirs_in_one_wandb_group(tmp_path, dataset, tiny_cache_dir):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(sft_sweep(sweep, dataset, tiny_cache_dir, "joblib", "sft.max_steps=2", "sft.eval_every=0",
                                    "seed=1,2"),
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = []
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["finished"] and summary["steps"] == 2
        (run,) = offline_runs(sweep / job)
        runs.append(run)
    assert {r["group"] for r in runs} == {"sweep-sweep"}
    assert sorted(r["name"] for r in runs) == ["sft:seed=1", "sft:seed=2"]
    assert runs[0]["id"] != runs[1]["id"]


def _submitit_tasks(folder: Path) -> list[int]:
    """Pids of the submitit job processes (``python -m submitit.core._submit <folder>``) of this sweep."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in cmd and any(str(folder).encode() in part for part in cmd):
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job process through /proc")
def test_preempted_submitit_job_is_requeued_and_resumes_in_the_same_run_and_wandb_run(tmp_path, dataset,
                                                                                        tiny_cache_dir):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    cmd = sft_sweep(sweep, dataset, tiny_cache_dir, "submitit_local", "sft.max_steps=12", "sft.checkpoint_every=2",
                    "sft.eval_every=6", "sft.eval_max_examples=4", "sft.samples=1", "sft.sample_max_new_tokens=8",
                    "seed=0")
    main = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((run_dir / "checkpoints").glob("step-*.ckpt")):
            assert main.poll() is None, f"the sweep ended before a checkpoint:\n{main.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        (task,) = _submitit_tasks(sweep / ".submitit")
        # What SLURM sends before a preemption or the time limit (submitit's default signal); with timeout_min=60
        # submitit counts it as a preemption and requeues the job with the same pickled config.
        os.kill(task, signal.SIGUSR2)
        out, _ = main.communicate(timeout=400)
    finally:
        if main.poll() is None:
            os.killpg(main.pid, signal.SIGKILL)
    assert main.returncode == 0, out[-4000:]

    logs = "\n".join(p.read_text(errors="replace") for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-3000:]
    assert list(sweep.iterdir()) and sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [".submitit", "0"]

    # Resumed from the checkpoint, not from step 0: every step up to the checkpoint was trained (and logged) once.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 12
    resumed = int(Path(summary["resumed_from"]).stem.split("-")[1])
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(line)]
    assert resumed >= 2 and steps.count(1) == 1 and all(steps.count(s) == 1 for s in range(1, resumed + 1))
    assert set(steps) == set(range(1, 13))
    assert (run_dir / "model" / "selfdebug_sft.json").is_file()

    # The same W&B run, continued: two offline segments under the run dir, one id, one group and tags.
    runs = offline_runs(run_dir)
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert len(runs) == 2 and {r["id"] for r in runs} == {run_id}
    for run in runs:
        assert run["group"] == "sweep-sweep" and run["job_type"] == "sft"
        assert {"exp:sft_quickstart", "model:tiny", "peft:none", "trainer:cpu", "stage:sft"} <= set(run["tags"])
    final = runs[-1]["artifacts"]
    assert [a["name"] for a in final if a["type"] == "model"] == ["sft-tiny"]
    assert any(a["paths"] == ["heldout/samples.table.json"] for a in runs[0]["artifacts"] + final)
