"""``python -m selfdebug.pipeline +exp=quickstart``: collect -> SFT -> RL -> evaluate -> report, in one command.

Each stage runs as its own command line (``python -m selfdebug.collect``, ``selfdebug.train``,
``selfdebug.evaluate``) in a fixed folder under the pipeline's run dir, and stages hand artifacts on by path:
the collected dataset to SFT and RL, the SFT model to RL, each trained model to the evaluation. A stage whose
complete output already exists is skipped, and a stage that was killed resumes from its own checkpoints, so a
killed pipeline re-run with the same command finishes without redoing finished work.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from selfdebug.core.cli import CONF_DIR, user_errors
from selfdebug.core.errors import SelfDebugError

log = logging.getLogger("selfdebug.pipeline")


def _done(stage: str, run_dir: Path) -> bool:
    """A stage's output is complete: each writes its final marker last, atomically."""
    if stage == "collect":
        return (run_dir / "dataset" / "stats.json").exists()
    if stage in ("sft", "rl"):
        return (run_dir / "model").is_dir() and (run_dir / "summary.json").exists()
    return (run_dir / "results.json").exists()


def _run_stage(name: str, module: str, run_dir: Path, overrides: list[str]) -> None:
    if _done(name.split(":")[0], run_dir):
        print(f"[pipeline] {name}: complete output found in {run_dir}, skipped", flush=True)
        return
    cmd = [sys.executable, "-m", module, f"hydra.run.dir={run_dir}", *overrides]
    print(f"[pipeline] {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.monotonic()
    code = subprocess.run(cmd, env=os.environ.copy()).returncode
    if code != 0:
        raise SelfDebugError(f"stage {name} failed with exit status {code}; fix the cause and run the same command "
                             f"again: finished stages are skipped and {name} resumes from {run_dir}")
    print(f"[pipeline] {name}: done in {time.monotonic() - start:.0f}s", flush=True)


def run(cfg: DictConfig) -> dict:
    root = Path(HydraConfig.get().runtime.output_dir)
    # One W&B group for all the stages of this pipeline; the tags (model:, stage:, ...) tell them apart.
    group = re.sub(r"[^\w.-]+", "_", f"pipeline-{root.name}")
    logger = ["logger=wandb", f"logger.group={group}"] if cfg.wandb else ["logger=none"]
    common = [f"model={cfg.model}", f"seed={cfg.seed}", *logger]
    extra = lambda key: [str(o) for o in (cfg[key].overrides or [])]  # noqa: E731
    dirs = {"collect": root / "collect", "sft": root / "sft", "rl": root / "rl"}
    dataset = dirs["collect"] / "dataset"
    started = time.monotonic()
    if cfg.collect.enabled:
        _run_stage("collect", "selfdebug.collect", dirs["collect"], common + extra("collect"))
    if cfg.sft.enabled:
        _run_stage("sft", "selfdebug.train", dirs["sft"], common + [f"dataset.path={dataset}"] + extra("sft"))
    if cfg.rl.enabled:
        init = [f"rl.sft_checkpoint={dirs['sft'] / 'model'}"] if cfg.sft.enabled else []
        _run_stage("rl", "selfdebug.train", dirs["rl"], common + [f"dataset.path={dataset}"] + init + extra("rl"))
    eval_dirs = []
    if cfg.evaluate.enabled:
        for label in cfg.evaluate.models:
            if label == "base":
                model = [f"model={cfg.model}"]
            elif label in ("sft", "rl") and cfg[label].enabled:
                model = ["model=hf", f"model.name_or_path={dirs[label] / 'model'}"]
            else:
                continue
            run_dir = root / "evaluate" / label
            eval_dirs.append(run_dir)
            _run_stage(f"evaluate:{label}", "selfdebug.evaluate", run_dir,
                       model + [f"label={label}", f"seed={cfg.seed}", *logger] + extra("evaluate"))
    report = None
    if cfg.report:
        from selfdebug.analysis.report import write_report

        report = write_report([root], root / "report")["markdown"]
    elapsed = time.monotonic() - started
    print(f"[pipeline] finished in {elapsed:.0f}s" + (f"; report: {report} (and report.html beside it)" if report
                                                        else ""), flush=True)
    return {"run_dir": str(root), "report": str(report) if report else None, "seconds": elapsed}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="pipeline")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
