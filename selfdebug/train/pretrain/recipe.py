"""The pretraining stage (``stage=pretrain``): a small Llama and its tokenizer trained from scratch on Python
source, on the shared lifecycle (``selfdebug.train.lifecycle``).

    python -m selfdebug.train stage=pretrain +exp=pretrain_mini                        # the model=mini recipe
    python -m selfdebug.train +exp=pretrain_mini 'pretrain.source_dirs=[~/src/mylib]'  # any folder of .py files

The run dir gets ``data/`` (the prepared tokenizer and sequences, reused on resume), metrics.jsonl,
summary.json, samples.jsonl (greedy held-out repairs), the W&B run, ``checkpoints/`` and, once training is
done, ``model/`` (weights, tokenizer, and ``recipe.json``: the command, seed, data recipe, token counts and
the sha256 of every model file). ``model.name_or_path`` is not read: the model is built here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from selfdebug.core.errors import ConfigError
from selfdebug.core.tracking import write_json_atomic
from selfdebug.train import lifecycle
from selfdebug.train.checkpoints import StepCheckpoint
from selfdebug.train.distributed import check_launch
from selfdebug.train.pretrain.data import PackedSteps
from selfdebug.train.pretrain.module import HeldOutEval, PretrainModule, TimeLimit, build_model
from selfdebug.train.pretrain.prepare import prepare
from selfdebug.train.pretrain.settings import PretrainSettings
from selfdebug.train.settings import settings_from
from selfdebug.train.sft.module import MetricsLog

log = logging.getLogger("selfdebug.train")

RECIPE = "recipe.json"


def total_steps(settings: PretrainSettings) -> int:
    if settings.max_steps is not None:
        return int(settings.max_steps)
    return max(1, math.ceil(settings.token_budget / (settings.batch_size * settings.seq_len)))


def command_line() -> str:
    """The command that started this run: the entry point and Hydra's overrides, as typed."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # called without Hydra's app (tests call run() directly)
        overrides = sys.argv[1:]
    return " ".join(["python -m selfdebug.train", *overrides])


def sha256_of(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.name != RECIPE}


def write_recipe(model_dir: Path, run, settings: PretrainSettings, data: dict, summary: dict) -> dict:
    """``model/recipe.json``: everything needed to rebuild the checkpoint and to check a copy of it."""
    import torch
    import transformers

    recipe = {"command": command_line(), "seed": run.seed, "stage": "pretrain", "pretrain": asdict(settings),
              "trainer": {k: run.trainer_config.get(k) for k in ("accelerator", "devices", "precision")},
              "data": {k: v for k, v in data.items() if k != "decontamination"} |
                      {"decontamination": {k: v for k, v in data["decontamination"].items() if k != "matches"}},
              "steps": summary["steps"], "total_steps": summary["total_steps"],
              "stopped_by_time_limit": summary["stopped_by_time_limit"],
              "tokens_seen": summary["tokens_seen"], "final_loss": summary.get("final_loss"),
              "heldout": summary.get("heldout", {}), "parameters": summary["parameters"],
              "seconds": summary["seconds"], "versions": {"python": sys.version.split()[0],
                                                          "torch": torch.__version__,
                                                          "transformers": transformers.__version__},
              "sha256": sha256_of(model_dir)}
    write_json_atomic(model_dir / RECIPE, recipe)
    return recipe


def run(cfg: DictConfig, run_dir: Path) -> dict:
    done = lifecycle.finished_summary(run_dir, "pretrain")
    if done is not None:
        return done
    # ---- setup: everything that can fail, before the Trainer starts
    run = lifecycle.begin(cfg, run_dir, "pretrain")
    settings = settings_from(PretrainSettings, cfg.get("pretrain"), "pretrain")
    if run.lora.enabled:
        raise ConfigError("peft: pretraining trains every weight from scratch; use peft=none")
    steps = total_steps(settings)
    stop = min(steps, settings.stop_after or steps)
    trainer = lifecycle.build(run, max_steps=stop, max_grad_norm=None)
    if trainer.world_size != 1:
        raise ConfigError(f"trainer.devices = {trainer.world_size}: the pretraining stage runs on one device")
    check_launch(trainer)
    from selfdebug.execution import SandboxConfig

    sandbox = SandboxConfig(**lifecycle.container(cfg.get("sandbox")))
    data = prepare(settings, run.seed, run.run_dir / "data", sandbox)
    tokenizer, t = data.tokenizer, data.tensors
    model = build_model(settings, tokenizer, run.seed)
    n_params = sum(p.numel() for p in model.parameters())
    stream = PackedSteps(t["code_train"], t["chat_train_ids"], t["chat_train_labels"],
                         batch_size=settings.batch_size, micro_batch_size=settings.micro_batch_size,
                         repair_fraction=settings.repair_fraction, total_steps=steps, pad_id=tokenizer.pad_token_id,
                         seed=run.seed)
    log.info("pretrain: %s parameters; %d code + %d chat training sequences of %d tokens; %d steps of %d "
             "sequences (%d chat) = %s tokens", f"{n_params:,}", len(t["code_train"]), len(t["chat_train_ids"]),
             settings.seq_len, steps, settings.batch_size, stream.n_chat,
             f"{steps * settings.batch_size * settings.seq_len:,}")
    module = PretrainModule(model, settings, steps)
    ckpt_path = lifecycle.resume_from(run)

    # ---- train
    with lifecycle.tracked(run, trainer) as run_logger:
        metrics = MetricsLog(run_logger, every=int(cfg.get("log_every", 1)))
        heldout = HeldOutEval(t, data.heldout_repairs, tokenizer, settings, run_logger, run.run_dir)
        clock = TimeLimit(settings.max_minutes)
        trainer.callbacks.extend([metrics, heldout, clock,
                                  StepCheckpoint(run.ckpt_dir, settings.checkpoint_every, settings.keep_checkpoints)])
        lifecycle.fit(trainer, module, stream, ckpt_path, weights_only=True)
        step = trainer.global_step
        summary = {**lifecycle.common_summary(run, trainer, module, steps=step, total_steps=steps,
                                              trainable=n_params, resumed_from=ckpt_path),
                   "base": "scratch", "parameters": n_params, "final_loss": metrics.last.get("loss"),
                   "tokens_seen": step * settings.batch_size * settings.seq_len,
                   "stopped_by_time_limit": clock.hit, "heldout": heldout.last,
                   "train_seconds_total": round(clock.elapsed, 1), "data": data.record["sequences"]}
        summary["finished"] = summary["finished"] or clock.hit
        if summary["finished"]:
            info = {"base": "scratch", "answer_form": settings.answer_form, "steps": step,
                    "pretrain": asdict(settings)}
            saved = lifecycle.save_model(run, trainer, module.model, tokenizer, info=info, merge_lora=False)
            if saved is not None:
                summary["model_dir"] = str(saved)
                summary["sha256"] = write_recipe(saved, run, settings, data.record, summary)["sha256"]
        lifecycle.finish(run, run_logger, summary)
    if summary["finished"]:
        print(f"pretraining done: {step} steps, {summary['tokens_seen']:,} tokens, final loss "
              f"{summary['final_loss']:.4f}; model: {run.model_dir}", flush=True)
    else:
        how = f"run the same command with hydra.run.dir={run.run_dir}"
        print(lifecycle.stopped_message(run, step, steps, how), flush=True)
    return summary
