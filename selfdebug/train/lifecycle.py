"""The lifecycle every training stage shares, torchtune-recipe style: plain functions a stage's ``run`` calls in
order, each stage supplying only what differs (its settings, data, module and summary).

    done = finished_summary(run_dir, "sft")     # a run that finished here: its summary, nothing else runs
    run = begin(cfg, run_dir, "sft")            # seed; the peft and trainer config checked
    ... the stage's own setup: every check that can fail, model and data loaded
    model = prepare_for_training(model, run.lora, settings.gradient_checkpointing)
    trainer = build(run, max_steps=..., max_grad_norm=..., callbacks=[...])   # then the stage's batch checks
    check_launch(trainer)
    with tracked(run, trainer) as run_logger:  # metrics.jsonl, summary.json, W&B; finished even on error
        fit(trainer, module, stream, resume_from(run))
        summary = {**common_summary(...), ...}
        save_model(...) if finished                # model/: what selfdebug.evaluate model=hf loads
        finish(run, run_logger, summary)

Setup -> train -> cleanup: every check that can fail runs before the Trainer starts, so bad input ends the run
with exit status 2 and nothing half-written; a run stopped early (``sft.stop_after`` / ``rl.stop_after``)
resumes from its newest checkpoint when the same command runs again in the same ``hydra.run.dir``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.cli import seed_everything
from selfdebug.train.checkpoints import latest_checkpoint, resume_checkpoint, save_final
from selfdebug.train.distributed import (
    NullRunLogger,
    build_trainer,
    check_trainer,
    full_parameters,
    rank_fingerprints,
)
from selfdebug.train.settings import LoraSettings, settings_from

log = logging.getLogger("selfdebug.train")


@dataclass
class Run:
    """What every stage's run knows once ``begin`` has checked the shared config."""

    cfg: DictConfig
    run_dir: Path
    stage: str  # sft | rl: the summary's stage, the W&B job type, the settings block's name
    seed: int
    lora: LoraSettings
    trainer_config: dict
    strategy: str  # auto | ddp | fsdp | deepspeed
    started: float = field(default_factory=time.time)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it, slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision, accelerator: str = "auto") -> str:
    """bf16 where the device computes it natively, else fp32 (32-true) with a warning: a GPU without bf16, or a
    CPU run (``accelerator=cpu``, or no GPU) on a CPU without AVX512-BF16 / AMX."""
    precision = str(precision)
    if not precision.startswith("bf16"):
        return precision
    on_cpu = str(accelerator) == "cpu" or not torch.cuda.is_available()
    if on_cpu and not cpu_has_bf16():
        log.warning("trainer.precision=%s but this CPU has no native bf16 (AVX512-BF16 or AMX), where it runs "
                    "slower than fp32; training in fp32 (32-true)", precision)
        return "32-true"
    if not on_cpu and not torch.cuda.is_bf16_supported():
        log.warning("trainer.precision=%s but this GPU has no bf16; training in fp32 (32-true)", precision)
        return "32-true"
    return precision


def trainer_config(cfg: DictConfig) -> dict:
    """The ``trainer`` group as a dict with its precision resolved for this machine."""
    tcfg = container(cfg.trainer)
    tcfg["precision"] = resolve_precision(tcfg.get("precision", "32-true"), tcfg.get("accelerator", "auto"))
    return tcfg


def finished_summary(run_dir: Path, stage: str) -> dict | None:
    """The summary of a ``stage`` run that finished in ``run_dir`` (its model saved), else None."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if not ((run_dir / "model" / "selfdebug_sft.json").exists() and summary.exists()):
        return None
    done = json.loads(summary.read_text())
    if done.get("stage") != stage or not done.get("finished"):
        return None
    print(f"training already complete: {run_dir / 'model'}", flush=True)
    return done


def begin(cfg: DictConfig, run_dir: Path, stage: str) -> Run:
    """Seed everything (``seed``) and check the config both stages share (``peft``, ``trainer``) before the stage
    loads anything."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    seed_everything(seed)
    lora = settings_from(LoraSettings, cfg.get("peft") or {}, "peft")
    tcfg = trainer_config(cfg)
    strategy = check_trainer(tcfg, lora=lora.enabled, merge=lora.merge)
    return Run(cfg, run_dir, stage, seed, lora, tcfg, strategy)


def build(run: Run, *, max_steps: int, max_grad_norm: float | None, callbacks=()):
    """The Lightning Trainer of ``trainer`` (built before fit so the stage's batch checks know the ranks; nothing
    starts until fit). Logging and checkpoints are the lifecycle's own, not Lightning's."""
    return build_trainer(run.trainer_config, lora=run.lora.enabled, max_grad_norm=max_grad_norm,
                         max_steps=max_steps, max_epochs=1, callbacks=list(callbacks),
                         default_root_dir=str(run.run_dir), enable_checkpointing=False, logger=False,
                         use_distributed_sampler=False)


def resume_from(run: Run) -> Path | None:
    """The checkpoint this run continues from (config key ``resume``: auto, null or a path)."""
    path = resume_checkpoint(run.cfg.get("resume", "auto"), run.ckpt_dir)
    if path is not None:
        log.info("resuming from %s", path)
    return path


@contextmanager
def tracked(run: Run, trainer) -> Iterator:
    """The run's records (metrics.jsonl, summary.json, W&B) on rank 0, closed with the run's exit status."""
    from selfdebug.core.tracking import logger_from_config

    run_logger = (logger_from_config(run.cfg, run.run_dir, container(run.cfg), job_type=run.stage)
                  if trainer.is_global_zero else NullRunLogger())
    run.started = time.time()  # summary.json's seconds: training, not setup
    try:
        yield run_logger
    except BaseException:
        run_logger.finish(1)
        raise
    run_logger.finish(0)


def fit(trainer, module, stream, ckpt_path: Path | None, **kwargs) -> None:
    """``trainer.fit`` on the stage's step stream (each item one step's batch: no DataLoader, no workers)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*is not a `DataLoader`.*")
        trainer.fit(module, train_dataloaders=stream, ckpt_path=str(ckpt_path) if ckpt_path else None, **kwargs)


def common_summary(run: Run, trainer, module, *, steps: int, total_steps: int, trainable: int,
                   resumed_from: Path | None, **rank_values) -> dict:
    """The summary.json fields every stage writes (the stage adds its own), right after fit: each rank's
    fingerprint (``ranks``, every rank takes part) of the weights as trained, before saving can merge or cast
    them."""
    summary = {"stage": run.stage, "model": run.cfg.model.name, "steps": steps, "total_steps": total_steps,
               "finished": steps >= total_steps, "peft": "lora" if run.lora.enabled else "none",
               "trainable_parameters": trainable, "seconds": round(time.time() - run.started, 2),
               "resumed_from": str(resumed_from) if resumed_from else None, "devices": trainer.world_size,
               "strategy": run.strategy}
    ranks = rank_fingerprints(module, **rank_values)
    if ranks is not None:  # each rank's values, in rank order
        summary["ranks"] = ranks
    return summary


def save_model(run: Run, trainer, model, tokenizer, *, merge_lora: bool, info: dict, save_dtype=None,
               extra: dict | None = None) -> Path | None:
    """``model/``, the ``save_pretrained`` folder ``selfdebug.evaluate model=hf`` loads, and each module of
    ``extra`` as a state dict file beside it. FSDP2: every rank gathers the full weights, rank 0 writes."""
    extra = extra or {}
    with ExitStack() as stack:
        state = stack.enter_context(full_parameters(model))
        gathered = {name: stack.enter_context(full_parameters(module)) for name, module in extra.items()}
        if not trainer.is_global_zero:
            return None
        for name, module in extra.items():
            torch.save(gathered[name] if gathered[name] is not None else module.state_dict(), run.run_dir / name)
        save_final(model, tokenizer, run.model_dir, merge_lora=merge_lora, save_dtype=save_dtype,
                   state_dict=state, info=info)
    return run.model_dir


def finish(run: Run, run_logger, summary: dict) -> None:
    """summary.json, and the W&B model artifact (``logger.artifacts.model``: a reference by default)."""
    run_logger.summary(summary)
    if "model_dir" in summary:
        run_logger.artifact(run.model_dir, name=f"{run.stage}-{run.cfg.model.name}", type="model")


def stopped_message(run: Run, steps: int, total_steps: int, how: str) -> str:
    return (f"{run.stage.upper()} stopped after step {steps} of {total_steps} ({run.stage}.stop_after); {how} "
            f"to resume from {latest_checkpoint(run.ckpt_dir)}")
