"""The SFT stage (``stage=sft``, the default): fine-tune on the collected trajectories.

    python -m selfdebug.train +exp=sft_quickstart                    # offline: tiny model, quickstart dataset
    python -m selfdebug.train +exp=sft_7b dataset.path=outputs/collect/paper/.../dataset
    python -m selfdebug.train +exp=sft_13b peft.r=64                 # LoRA settings are config keys

The run dir gets metrics.jsonl, summary.json, the W&B run, ``checkpoints/`` (Lightning, resumable),
``samples.jsonl`` (greedy answers on held-out problems) and, once training is done, ``model/``. What SFT adds
to the shared lifecycle (``selfdebug.train.lifecycle``): the records -> chat examples -> token batches, the
``SFTModule`` and its callbacks, and its summary figures.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selfdebug.core.answers import answer_form_of
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.models import load_causal_lm
from selfdebug.core.prompts import apply_chat_format
from selfdebug.execution import SandboxConfig
from selfdebug.train import lifecycle
from selfdebug.train.checkpoints import StepCheckpoint
from selfdebug.train.data import (
    StepBatches,
    build_examples,
    load_records,
    plan_batches,
    split_heldout,
    tokenize_examples,
)
from selfdebug.train.distributed import check_divisible, check_launch
from selfdebug.train.model import check_target_modules, count_trainable, prepare_for_training, weights_dtype
from selfdebug.train.repair_eval import make_repair_eval
from selfdebug.train.settings import settings_from
from selfdebug.train.sft.module import HeldOutEval, MetricsLog, SFTModule
from selfdebug.train.sft.settings import SFTSettings

log = logging.getLogger("selfdebug.train")


def load_examples(cfg: DictConfig, seed: int, answer_form: str = "full"):
    """Records -> chat examples (mixture applied) -> (train, heldout); every data error surfaces here."""
    dcfg = cfg.dataset
    if dcfg.path is None:
        raise ConfigError("dataset.path is not set; point it at a collection's dataset folder")
    trajectories, codegen = load_records(dcfg.path)
    if not trajectories and not codegen:
        raise DataError(f"dataset.path: {dcfg.path} holds no records (its shards are empty); collect data first")
    mixture = lifecycle.container(dcfg.mixture)
    examples = build_examples(trajectories, codegen, mixture, only_correct=bool(dcfg.only_correct),
                              dedupe=bool(dcfg.dedupe), seed=seed, answer_form=answer_form)
    if not examples:
        n_ok = sum(r["verdict"] == "correct" for _, r in trajectories)
        raise DataError(f"dataset.path: {dcfg.path} gives no training examples ({len(trajectories)} trajectories, "
                        f"{n_ok} verified correct, {len(codegen)} code-generation records) with dataset.mixture="
                        f"{mixture}, dataset.only_correct={dcfg.only_correct} and answers in the "
                        f"{answer_form!r} form")
    train, heldout = split_heldout(examples, int(dcfg.heldout_problems), seed)
    return train, heldout, {"trajectory_records": len(trajectories), "codegen_records": len(codegen)}


def run(cfg: DictConfig, run_dir: Path) -> dict:
    done = lifecycle.finished_summary(run_dir, "sft")
    if done is not None:
        return done
    # ---- setup: everything that can fail, before the Trainer starts
    run = lifecycle.begin(cfg, run_dir, "sft")
    settings = settings_from(SFTSettings, cfg.get("sft"), "sft")
    lora = run.lora
    answer_form = answer_form_of(cfg, cfg.model.name_or_path)
    train_ex, heldout_ex, counts = load_examples(cfg, run.seed, answer_form)
    model, tokenizer = load_causal_lm(
        cfg.model.name_or_path, dtype=weights_dtype(settings.dtype, lora.enabled, str(cfg.trainer.accelerator)),
        device="cpu", tiny_cache_dir=OmegaConf.select(cfg, "model.generator.tiny_cache_dir"),
        trust_remote_code=bool(cfg.get("trust_remote_code", False)),
        attn_implementation=OmegaConf.select(cfg, "model.attn_implementation"))
    apply_chat_format(tokenizer, OmegaConf.select(cfg, "model.chat_format", default="template"))  # before rendering
    if lora.enabled:
        check_target_modules(model, lora.target_modules)
    train_tok, dropped = tokenize_examples(train_ex, tokenizer, cfg.dataset.max_length)
    heldout_tok, _ = tokenize_examples(heldout_ex, tokenizer, cfg.dataset.max_length)
    if not train_tok:
        raise DataError(f"dataset.max_length = {cfg.dataset.max_length}: all {len(train_ex)} training examples "
                        "are longer; raise it")
    plan = plan_batches(len(train_tok), settings.batch_size, settings.micro_batch_size, settings.epochs,
                        settings.max_steps)
    model = prepare_for_training(model, lora, settings.gradient_checkpointing)
    stop = min(plan.total_steps, settings.stop_after or plan.total_steps)
    trainer = lifecycle.build(run, max_steps=stop, max_grad_norm=settings.max_grad_norm)
    world = trainer.world_size
    accumulation = check_divisible(settings.batch_size, settings.micro_batch_size, world,
                                   ("sft.batch_size", "sft.micro_batch_size"))
    if run.strategy == "deepspeed" and accumulation != 1:
        raise ConfigError(f"sft.micro_batch_size = {settings.micro_batch_size}: under trainer=deepspeed each rank "
                          f"runs one micro-batch per step (the engine does its own accumulation); set "
                          f"sft.micro_batch_size={settings.batch_size // world} (sft.batch_size / trainer.devices)")
    check_launch(trainer)

    kinds = Counter(x.kind for x in train_tok)
    n_trainable = count_trainable(model)
    log.info("SFT: %d training examples %s (%d over dataset.max_length dropped), %d held out; %d steps of %d "
             "examples (%d rank(s) x %d x %d micro-batches); %s trainable parameters; %s attention", len(train_tok),
             dict(kinds), dropped, len(heldout_tok), plan.total_steps, plan.batch_size, world, accumulation,
             plan.micro_batch_size, f"{n_trainable:,}", model.config._attn_implementation)
    stream = StepBatches(train_tok, plan, tokenizer.pad_token_id, seed=run.seed, rank=trainer.global_rank,
                         world=world)
    module = SFTModule(model, settings, plan.total_steps, plan.steps_per_epoch,
                       trainable_only_checkpoints=lora.enabled)
    ckpt_path = lifecycle.resume_from(run)

    # ---- train
    with lifecycle.tracked(run, trainer) as run_logger:
        metrics = MetricsLog(run_logger, every=int(cfg.get("log_every", 1)))
        trainer.callbacks.extend([
            metrics,
            HeldOutEval(heldout_tok, tokenizer, run_logger, run.run_dir, settings.eval_every,
                        settings.eval_max_examples, settings.samples, settings.sample_max_new_tokens,
                        settings.micro_batch_size),
            StepCheckpoint(run.ckpt_dir, settings.checkpoint_every, settings.keep_checkpoints)])
        repair = make_repair_eval(settings.repair_eval, tokenizer=tokenizer, answer_form=answer_form, trainer=trainer,
                                  strategy=run.strategy, run_logger=run_logger, run_dir=run.run_dir, last_step=stop,
                                  sandbox_config=SandboxConfig(**lifecycle.container(cfg.get("sandbox"))))
        if repair is not None:
            trainer.callbacks.append(repair)
        lifecycle.fit(trainer, module, stream, ckpt_path, weights_only=True)  # ours: tensors and plain values
        step = trainer.global_step
        summary = {**lifecycle.common_summary(run, trainer, module, steps=step, total_steps=plan.total_steps,
                                              trainable=n_trainable, resumed_from=ckpt_path),
                   "base": str(cfg.model.name_or_path), "final_loss": metrics.last.get("loss"),
                   "train_examples": len(train_tok), "examples_by_kind": dict(kinds),
                   "heldout_examples": len(heldout_tok), "dropped_over_max_length": dropped,
                   "answer_form": answer_form, **counts}
        if summary["finished"]:
            info = {"base": str(cfg.model.name_or_path), "answer_form": answer_form, "steps": step,
                    "sft": asdict(settings),
                    "peft": asdict(lora) if lora.enabled else None, "devices": world, "strategy": run.strategy}
            saved = lifecycle.save_model(run, trainer, module.model, tokenizer, info=info, merge_lora=lora.merge,
                                         save_dtype=settings.save_dtype)
            if saved is not None:
                summary["model_dir"] = str(saved)
        lifecycle.finish(run, run_logger, summary)
    if not trainer.is_global_zero:
        return summary
    if summary["finished"]:
        print(f"SFT done: {step} steps, final loss {summary['final_loss']:.4f}; model: {run.model_dir}", flush=True)
    else:
        how = f"run the same command with hydra.run.dir={run.run_dir}"
        print(lifecycle.stopped_message(run, step, plan.total_steps, how), flush=True)
    return summary
