"""``python -m selfdebug.pipeline``: collect -> SFT -> RL -> evaluate -> report, killed in RL and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


def _list(key: str, items: list[str]) -> str:
    """A Hydra list override whose items are themselves overrides (quoted: they hold '=' and '+')."""
    return f"{key}=[" + ",".join(f'"{item}"' for item in items) + "]"


SMALL = ["+exp=quickstart", "wandb=false",
         _list("collect.overrides", ["+exp=collect_quickstart", "data.limit_per_source=12", "n_initial=1"]),
         _list("sft.overrides", ["+exp=sft_quickstart", "sft.max_steps=6", "sft.eval_every=0",
                                 "sft.checkpoint_every=3"]),
         _list("rl.overrides", ["+exp=rl_quickstart", "rl.total_steps=6", "rl.checkpoint_every=1"]),
         _list("evaluate.overrides", ["limit=2", "n_samples=1", "rounds=1", "ks=[1]",
                                      "sampling.max_new_tokens=16"])]


@pytest.mark.slow
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

    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "collect: complete output found" in done.stdout and "sft: complete output found" in done.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not redone
    assert (run_dir / "rl" / "model").is_dir()
    for label in ("base", "sft", "rl"):
        assert (run_dir / "evaluate" / label / "results.json").is_file()
    report = (run_dir / "report" / "report.md").read_text()
    assert all(f"| {label} |" in report for label in ("base", "sft", "rl"))
    assert "report:" in done.stdout
