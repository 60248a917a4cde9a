"""``python -m selfdebug.pipeline +exp=quickstart``: collect -> SFT -> RL -> evaluate -> report, in one command.

Each stage runs as its own command line (``python -m selfdebug.collect``, ``selfdebug.train``,
``selfdebug.evaluate``) in a fixed folder under the pipeline's run dir, and stages hand artifacts on by path:
the collected dataset to SFT and RL, the SFT model to RL, each trained model to the evaluation. A stage whose
complete output already exists is skipped, and a stage that was killed resumes from its own checkpoints, so a
killed pipeline re-run with the same command finishes without redoing finished work. Before the first stage
starts, every stage still to run has its config composed and checked (``check_stages``), so a bad override in
a late stage's list fails at once instead of after the stages before it.

``evaluate.benchmarks`` (a mapping ``name -> [override, ...]``) evaluates each model on each benchmark, in
``evaluate/<label>/<name>``; without it each model is evaluated once, in ``evaluate/<label>``.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfdebug.collect import app as collect_app
from selfdebug.core.cli import CONF_DIR, user_error_in, user_errors
from selfdebug.core.errors import ConfigError, SelfDebugError
from selfdebug.evaluate import app as evaluate_app
from selfdebug.train import app as train_app

log = logging.getLogger("selfdebug.pipeline")

# A stage's command line (python -m <module>) and its app module: CONFIG_NAME and check(cfg), the checks the
# command runs before it loads anything heavy. Light imports: none of them loads torch. (Importing
# selfdebug.train also registers the sft / rl / peft structured configs that train.yaml composes.)
STAGE_APPS = {"selfdebug.collect": collect_app, "selfdebug.train": train_app, "selfdebug.evaluate": evaluate_app}


def _done(stage: str, run_dir: Path) -> bool:
    """A stage's output is complete: each writes its final marker last, atomically."""
    if stage == "collect":
        return (run_dir / "dataset" / "stats.json").exists()
    if stage in ("sft", "rl"):
        return (run_dir / "model").is_dir() and (run_dir / "summary.json").exists()
    return (run_dir / "results.json").exists()


@dataclass(frozen=True)
class Stage:
    """One command of the pipeline: ``python -m <module> hydra.run.dir=<run_dir> <overrides>``; ``keys`` are the
    pipeline's config keys whose values went into ``overrides``, for error messages."""

    name: str
    module: str
    run_dir: Path
    overrides: list[str]
    keys: tuple[str, ...]

    @property
    def done(self) -> bool:
        return _done(self.name.split(":")[0], self.run_dir)

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, f"hydra.run.dir={self.run_dir}", *self.overrides]

    @property
    def shell_line(self) -> str:
        """The command as one shell-quoted line, for the log and the dry run: ``python -m ...`` (the pipeline
        runs it with its own interpreter, ``sys.executable``)."""
        return shlex.join(["python", *self.command[1:]])


def _run_stage(stage: Stage) -> None:
    name, run_dir = stage.name, stage.run_dir
    if stage.done:
        print(f"[pipeline] {name}: complete output found in {run_dir}, skipped", flush=True)
        return
    print(f"[pipeline] {name}: {stage.shell_line}", flush=True)
    start = time.monotonic()
    code = subprocess.run(stage.command, env=os.environ.copy()).returncode
    if code != 0:
        raise SelfDebugError(f"stage {name} failed with exit status {code}; fix the cause and run the same command "
                             f"again: finished stages are skipped and {name} resumes from {run_dir}")
    print(f"[pipeline] {name}: done in {time.monotonic() - start:.0f}s", flush=True)


def check_stages(stages: list[Stage]) -> None:
    """Composes the config of every stage still to run, as its command line will, and runs that command's own
    cheap checks (``check(cfg)`` of its app module: settings ranges, config keys; no data, model or torch), so
    a mistyped SFT, RL or evaluation override fails now, in a second or two, rather than after the stages
    before it have run for half an hour. The local files and folders a stage reads (its app's ``input_paths``:
    a dataset, a model folder, a benchmark file) must exist or lie in the run dir of an earlier stage that is
    still to run."""
    coming: list[Path] = []  # the run dirs of the earlier stages still to run: their outputs do not exist yet
    for stage in stages:
        if stage.done:
            continue
        app = STAGE_APPS[stage.module]
        where = f"stage {stage.name} ({', '.join(stage.keys)})"
        # Hydra's own keys (the run dir, a launcher) do not reach the stage's config; compose has no use for them.
        overrides = [o for o in stage.overrides if not re.match(r"[+~]*hydra[./]", o)]
        try:
            cfg = compose(config_name=app.CONFIG_NAME, overrides=overrides)
            app.check(cfg)
        except (SelfDebugError, HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(f"{where}: {_reason(exc)}") from None
        for key, value in app.input_paths(cfg).items():
            path = Path(value).expanduser().resolve()
            if not path.exists() and not any(path.is_relative_to(d) for d in coming):
                raise ConfigError(f"{where}: {key} = {value!r} does not exist, and no earlier stage of this pipeline "
                                  "writes it")
        coming.append(stage.run_dir.resolve())


def _reason(exc: Exception) -> str:
    """What a stage's own command line would print for ``exc``: the user error, or Hydra's message with the
    OmegaConf error under it ("Error merging override sft.lr=abc" alone does not say what is wrong)."""
    user = user_error_in(exc)
    if user is not None:
        return str(user)
    text = str(exc).split("\nConfig search path:")[0].rstrip()
    cause = exc.__cause__
    if cause is not None and str(cause) not in text:
        text += "\n" + str(cause).rstrip()
    return text


def evaluation_benchmarks(cfg: DictConfig) -> dict[str | None, list[str]]:
    """``{name: overrides}`` from ``evaluate.benchmarks``, checked; ``{None: []}`` when it is null or empty (one
    evaluation per model, in ``evaluate/<label>``, as before the key existed). An entry set to null is dropped."""
    benchmarks = cfg.evaluate.get("benchmarks")
    if benchmarks is None or (isinstance(benchmarks, DictConfig) and len(benchmarks) == 0):
        return {None: []}
    if not isinstance(benchmarks, DictConfig):
        raise ConfigError(f"evaluate.benchmarks = {_show(benchmarks)}; it must be a mapping from a benchmark name to "
                          f"a list of evaluate overrides, e.g. {{humanevalfix: [benchmark=humanevalfix]}}, or null")
    out: dict[str | None, list[str]] = {}
    for name in benchmarks:
        key = f"evaluate.benchmarks.{name}"
        if not re.fullmatch(r"[\w.-]+", str(name)) or str(name) in (".", ".."):
            raise ConfigError(f"{key}: the name is a folder name under evaluate/<label>/; use letters, digits, "
                              f"'_', '-' and '.'")
        entry = benchmarks[name]
        if entry is None:
            continue
        if not isinstance(entry, ListConfig) or not all(isinstance(o, str) for o in entry):
            raise ConfigError(f"{key} = {_show(entry)}; it must be a list of evaluate overrides (strings), e.g. "
                              f"[benchmark={name}, limit=200], or null to leave this benchmark out")
        out[str(name)] = [str(o) for o in entry]
    if not out:
        raise ConfigError("evaluate.benchmarks: every entry is null; give at least one benchmark, or set "
                          "evaluate.benchmarks=null for one evaluation per model")
    return out


def _show(value) -> str:
    return repr(OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value)


def base_model_settings(model: DictConfig) -> list[str]:
    """Overrides that carry the base model config's prompt settings to its trained SFT / RL checkpoints, which
    are evaluated as ``model=hf``: the chat format (a StarChat-pretrained base keeps StarChat turns), and the
    answer form when the base config fixes one (null: the trained model's folder records it)."""
    out = []
    for key in ("chat_format", "answer_form"):
        value = model.get(key)
        if value is not None:
            out.append(f"model.{key}={value}")
    return out


def plan(cfg: DictConfig, root: Path, model_name: str) -> list[Stage]:
    """Every stage the config asks for, in order, with the command line overrides each will get."""
    benchmarks = evaluation_benchmarks(cfg)
    # One W&B group for all the stages of this pipeline; the tags (model:, stage:, ...) tell them apart.
    group = re.sub(r"[^\w.-]+", "_", f"pipeline-{root.name}")
    logger = ["logger=wandb", f"logger.group={group}"] if cfg.wandb else ["logger=none"]
    common = [f"model={model_name}", f"seed={cfg.seed}", *logger]
    extra = lambda key: [str(o) for o in (cfg[key].overrides or [])]  # noqa: E731
    dirs = {"collect": root / "collect", "sft": root / "sft", "rl": root / "rl"}
    dataset = dirs["collect"] / "dataset"
    stages = []
    if cfg.collect.enabled:
        stages.append(Stage("collect", "selfdebug.collect", dirs["collect"], common + extra("collect"),
                            ("collect.overrides",)))
    if cfg.sft.enabled:
        stages.append(Stage("sft", "selfdebug.train", dirs["sft"], common + [f"dataset.path={dataset}"] + extra("sft"),
                            ("sft.overrides",)))
    if cfg.rl.enabled:
        init = [f"rl.sft_checkpoint={dirs['sft'] / 'model'}"] if cfg.sft.enabled else []
        stages.append(Stage("rl", "selfdebug.train", dirs["rl"],
                            common + [f"dataset.path={dataset}"] + init + extra("rl"), ("rl.overrides",)))
    if cfg.evaluate.enabled:
        # One verdict file for all the evaluations: the three models' round 0 (the same given wrong programs) is
        # judged once, and every model is shown the same feedback for it. The evaluate overrides come after, so
        # they can point sandbox.cache_path elsewhere.
        verdicts = ([f"sandbox.cache_path={root / 'evaluate' / 'verdicts.sqlite'}"]
                    if cfg.evaluate.shared_verdicts else [])
        for label in cfg.evaluate.models:
            if label == "base":
                model = [f"model={model_name}"]
            elif label in ("sft", "rl") and cfg[label].enabled:
                model = ["model=hf", f"model.name_or_path={dirs[label] / 'model'}", *base_model_settings(cfg.model)]
            else:
                continue
            for bench, bench_overrides in benchmarks.items():
                stages.append(Stage(
                    f"evaluate:{label}" + (f":{bench}" if bench else ""), "selfdebug.evaluate",
                    root / "evaluate" / label / (bench or ""),
                    model + [f"label={label}", f"seed={cfg.seed}", *logger] + verdicts + extra("evaluate")
                    + bench_overrides,
                    ("evaluate.overrides",) + ((f"evaluate.benchmarks.{bench}",) if bench else ())))
    return stages


def run(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    root = Path(hydra_cfg.runtime.output_dir)
    # The group option (model=mini), passed on to every stage.
    stages = plan(cfg, root, hydra_cfg.runtime.choices["model"])
    check_stages(stages)  # before any stage runs: a bad override costs nothing
    if cfg.dry_run:
        for stage in stages:
            state = f"complete output found in {stage.run_dir}" if stage.done else "would run"
            print(f"[pipeline] {stage.name}: {state}: {stage.shell_line}", flush=True)
        return {"run_dir": str(root), "report": None, "seconds": 0.0, "stages": [s.name for s in stages]}
    started = time.monotonic()
    for stage in stages:
        _run_stage(stage)
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
