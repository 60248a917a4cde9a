"""``python -m selfdebug.train``: train a code LLM to self-debug. ``stage=sft`` (default) fine-tunes on the
collected trajectories; ``stage=rl`` runs PPO (``selfdebug.train.rl.stage``) through this same entry point.

    python -m selfdebug.train +exp=sft_quickstart                    # offline: tiny model, quickstart dataset
    python -m selfdebug.train +exp=sft_7b dataset.path=outputs/collect/paper/.../dataset
    python -m selfdebug.train +exp=sft_13b peft.r=64                 # LoRA settings are config keys

The run dir gets metrics.jsonl, summary.json, the W&B run, ``checkpoints/`` (Lightning, resumable),
``samples.jsonl`` (greedy answers on held-out problems) and, once training is done, ``model/``: the
``save_pretrained`` folder that ``python -m selfdebug.evaluate model=hf model.name_or_path=<run>/model``
loads. Run the same command with the same ``hydra.run.dir`` to resume from the newest checkpoint.

Setup -> train -> cleanup: every check that can fail (records, mixture, batch sizes, LoRA targets, devices)
runs before the Trainer starts, so bad input ends the run with exit status 2 and nothing half-written.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.cli import CONF_DIR, seed_everything, user_errors
from selfdebug.core.errors import ConfigError, DataError

log = logging.getLogger("selfdebug.train")


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def trainer_config(cfg: DictConfig) -> dict:
    """The ``trainer`` group as a dict with its precision resolved for this machine."""
    tcfg = _container(cfg.trainer)
    tcfg["precision"] = resolve_precision(tcfg.get("precision", "32-true"))
    return tcfg


def run_logger_for(trainer, cfg: DictConfig, run_dir: Path, job_type: str):
    """Rank 0 keeps the run's records (metrics.jsonl, summary.json, W&B); the other ranks log nothing."""
    from selfdebug.train.distributed import NullRunLogger
    from selfdebug.core.tracking import logger_from_config

    if not trainer.is_global_zero:
        return NullRunLogger()
    return logger_from_config(cfg, run_dir, _container(cfg), job_type=job_type)


def resolve_precision(precision) -> str:
    """bf16 where the device supports it: a bf16 request on a GPU without bf16 falls back to fp32."""
    import torch

    precision = str(precision)
    if precision.startswith("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        log.warning("trainer.precision=%s but this GPU has no bf16; training in fp32 (32-true)", precision)
        return "32-true"
    return precision


def weights_dtype(dtype: str, lora: bool, accelerator: str):
    """``sft.dtype=auto``: fp32 weights for full fine-tuning (AdamW updates at lr 2e-5 vanish in bf16);
    the frozen base in bf16 under LoRA on a bf16 GPU (PEFT keeps the adapters in fp32)."""
    import torch

    from selfdebug.core.models import resolve_dtype

    if dtype != "auto":
        return resolve_dtype(dtype, "cpu")
    gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if lora and gpu and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_examples(cfg: DictConfig, seed: int):
    """Records -> chat examples (mixture applied) -> (train, heldout); every data error surfaces here."""
    from selfdebug.train.data import build_examples, load_records, split_heldout

    dcfg = cfg.dataset
    if dcfg.path is None:
        raise ConfigError("dataset.path is not set; point it at a collection's dataset folder")
    trajectories, codegen = load_records(dcfg.path)
    if not trajectories and not codegen:
        raise DataError(f"dataset.path: {dcfg.path} holds no records (its shards are empty); collect data first")
    examples = build_examples(trajectories, codegen, _container(dcfg.mixture), only_correct=bool(dcfg.only_correct),
                              dedupe=bool(dcfg.dedupe), seed=seed)
    if not examples:
        n_ok = sum(r["verdict"] == "correct" for _, r in trajectories)
        raise DataError(f"dataset.path: {dcfg.path} gives no training examples ({len(trajectories)} trajectories, "
                        f"{n_ok} verified correct, {len(codegen)} code-generation records) with dataset.mixture="
                        f"{_container(dcfg.mixture)} and dataset.only_correct={dcfg.only_correct}")
    train, heldout = split_heldout(examples, int(dcfg.heldout_problems), seed)
    return train, heldout, {"trajectory_records": len(trajectories), "codegen_records": len(codegen)}


def run_sft(cfg: DictConfig, run_dir: Path) -> dict:

    from selfdebug.train.data import StepBatches, plan_batches, tokenize_examples
    from selfdebug.train.distributed import (
        build_trainer,
        check_divisible,
        check_launch,
        check_trainer,
        full_parameters,
        rank_fingerprints,
    )
    from selfdebug.train.sft.module import (
        HeldOutEval,
        LoraSettings,
        MetricsLog,
        SFTModule,
        SFTSettings,
        StepCheckpoint,
        apply_lora,
        check_target_modules,
        enable_gradient_checkpointing,
        latest_checkpoint,
        resume_checkpoint,
        save_final,
    )
    from selfdebug.core.models import load_causal_lm

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if (model_dir / "selfdebug_sft.json").exists() and (run_dir / "summary.json").exists():
        print(f"training already complete: {model_dir}", flush=True)
        import json

        return json.loads((run_dir / "summary.json").read_text())

    # ---- setup: everything that can fail, before the Trainer starts
    seed = int(cfg.seed)
    seed_everything(seed)
    settings = SFTSettings(**_container(cfg.sft))
    lora = LoraSettings(**_container(cfg.peft))
    tcfg = trainer_config(cfg)
    strategy = check_trainer(tcfg, lora=lora.enabled, merge=lora.merge)
    train_ex, heldout_ex, counts = load_examples(cfg, seed)

    model, tokenizer = load_causal_lm(
        cfg.model.name_or_path, dtype=weights_dtype(settings.dtype, lora.enabled, str(cfg.trainer.accelerator)),
        device="cpu", tiny_cache_dir=OmegaConf.select(cfg, "model.generator.tiny_cache_dir"),
        trust_remote_code=bool(cfg.get("trust_remote_code", False)))
    if lora.enabled:
        check_target_modules(model, lora.target_modules)
    train_tok, dropped = tokenize_examples(train_ex, tokenizer, cfg.dataset.max_length)
    heldout_tok, _ = tokenize_examples(heldout_ex, tokenizer, cfg.dataset.max_length)
    if not train_tok:
        raise DataError(f"dataset.max_length = {cfg.dataset.max_length}: all {len(train_ex)} training examples "
                        "are longer; raise it")
    plan = plan_batches(len(train_tok), settings.batch_size, settings.micro_batch_size, settings.epochs,
                        settings.max_steps)
    if lora.enabled:
        model = apply_lora(model, lora)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    stop = min(plan.total_steps, settings.stop_after or plan.total_steps)
    # The Trainer knows the ranks: built now (nothing starts until fit), so every check below still runs first.
    trainer = build_trainer(tcfg, lora=lora.enabled, max_grad_norm=settings.max_grad_norm, max_steps=stop,
                            max_epochs=1, default_root_dir=str(run_dir), enable_checkpointing=False, logger=False,
                            use_distributed_sampler=False)
    world = trainer.world_size
    accumulation = check_divisible(settings.batch_size, settings.micro_batch_size, world,
                                   ("sft.batch_size", "sft.micro_batch_size"))
    if strategy == "deepspeed" and accumulation != 1:
        raise ConfigError(f"sft.micro_batch_size = {settings.micro_batch_size}: under trainer=deepspeed each rank "
                          f"runs one micro-batch per step (the engine does its own accumulation); set "
                          f"sft.micro_batch_size={settings.batch_size // world} (sft.batch_size / trainer.devices)")
    check_launch(trainer)

    kinds = Counter(x.kind for x in train_tok)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("SFT: %d training examples %s (%d over dataset.max_length dropped), %d held out; %d steps of %d "
             "examples (%d rank(s) x %d x %d micro-batches); %s trainable parameters", len(train_tok), dict(kinds),
             dropped, len(heldout_tok), plan.total_steps, plan.batch_size, world, accumulation,
             plan.micro_batch_size, f"{n_trainable:,}")

    stream = StepBatches(train_tok, plan, tokenizer.pad_token_id, seed=seed, rank=trainer.global_rank, world=world)
    module = SFTModule(model, settings, plan.total_steps, plan.steps_per_epoch,
                       trainable_only_checkpoints=lora.enabled)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = resume_checkpoint(cfg.get("resume", "auto"), ckpt_dir)

    # ---- train
    run_logger = run_logger_for(trainer, cfg, run_dir, "sft")
    metrics = MetricsLog(run_logger, every=int(cfg.get("log_every", 1)))
    trainer.callbacks.extend([
        metrics,
        HeldOutEval(heldout_tok, tokenizer, run_logger, run_dir, settings.eval_every, settings.eval_max_examples,
                    settings.samples, settings.sample_max_new_tokens, settings.micro_batch_size),
        StepCheckpoint(ckpt_dir, settings.checkpoint_every, settings.keep_checkpoints)])
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    exit_code = 1
    start = time.time()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*is not a `DataLoader`.*")
            trainer.fit(module, train_dataloaders=stream, ckpt_path=str(ckpt_path) if ckpt_path else None,
                        weights_only=True)  # our checkpoints hold tensors and plain values only
        step = trainer.global_step
        finished = step >= plan.total_steps
        summary = {"stage": "sft", "model": cfg.model.name, "base": str(cfg.model.name_or_path),
                   "steps": step, "total_steps": plan.total_steps, "finished": finished,
                   "final_loss": metrics.last.get("loss"), "train_examples": len(train_tok),
                   "examples_by_kind": dict(kinds), "heldout_examples": len(heldout_tok),
                   "dropped_over_max_length": dropped, "trainable_parameters": n_trainable,
                   "peft": "lora" if lora.enabled else "none", "seconds": round(time.time() - start, 2),
                   "resumed_from": str(ckpt_path) if ckpt_path else None, "devices": world,
                   "strategy": strategy, **counts}
        ranks = rank_fingerprints(module)  # every rank takes part
        if ranks is not None:
            summary["ranks"] = ranks
        if finished:
            with full_parameters(module.model) as state:  # FSDP2: every rank gathers, rank 0 writes
                if trainer.is_global_zero:
                    save_final(module.model, tokenizer, model_dir, merge_lora=lora.merge,
                               save_dtype=settings.save_dtype, state_dict=state,
                               info={"base": str(cfg.model.name_or_path), "steps": step, "sft": asdict(settings),
                                     "peft": asdict(lora) if lora.enabled else None, "devices": world,
                                     "strategy": strategy})
                    summary["model_dir"] = str(model_dir)
        run_logger.summary(summary)
        if "model_dir" in summary:  # the W&B model artifact (logger.artifacts.model: reference by default)
            run_logger.artifact(model_dir, name=f"sft-{cfg.model.name}", type="model")
        exit_code = 0
    finally:
        run_logger.finish(exit_code)
    if not trainer.is_global_zero:
        return summary
    if finished:
        print(f"SFT done: {step} steps, final loss {summary['final_loss']:.4f}; model: {model_dir}", flush=True)
    else:
        print(f"SFT stopped after step {step} of {plan.total_steps} (sft.stop_after); run the same command with "
              f"hydra.run.dir={run_dir} to resume from {latest_checkpoint(ckpt_dir)}", flush=True)
    return summary


def run_rl(cfg: DictConfig, run_dir: Path) -> dict:
    from selfdebug.train.rl.stage import run as run_ppo

    return run_ppo(cfg, run_dir)


# Stages share this entry point, its run dir layout and its config; each is one function of (cfg, run_dir).
STAGES = {"sft": run_sft, "rl": run_rl}


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    run_dir = Path(run_dir) if run_dir is not None else Path(HydraConfig.get().runtime.output_dir)
    stage = str(cfg.stage)
    if stage not in STAGES:
        raise ConfigError(f"stage = {stage!r}; expected one of {sorted(STAGES)}")
    return STAGES[stage](cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
