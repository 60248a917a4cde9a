"""The RL stage (``stage: rl``): PPO from the SFT model with the span-level composite reward.

    python -m selfdebug.train +exp=rl_quickstart                      # offline: tiny model, quickstart dataset
    python -m selfdebug.train +exp=rl_7b rl.sft_checkpoint=outputs/train/sft/codellama_7b/<time>/model
    python -m selfdebug.train --multirun +exp=rl_quickstart reward.weights.explanation=0,0.5,1 seed=1,2,3

(``python -m selfdebug.train.rl.stage`` takes the same arguments.) The run dir gets metrics.jsonl (every reward
term, KL, entropy, clipping, value loss, explained variance, lengths, pass rate, sandbox counts, time split),
rollouts.jsonl (sampled rollouts, also a W&B table), summary.json, the W&B run, ``checkpoints/`` (resumable:
run the same command with the same ``hydra.run.dir``) and, once training is done, ``model/``: the
``save_pretrained`` folder that ``python -m selfdebug.evaluate model=hf model.name_or_path=<run>/model`` loads.

Setup -> train -> cleanup: the reward config, the SFT checkpoint, the dataset, the PPO settings and the
devices are all checked before the Trainer starts; bad input ends the run with exit status 2.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.cli import CONF_DIR, seed_everything, user_errors
from selfdebug.core.errors import ConfigError, DataError

log = logging.getLogger("selfdebug.train.rl.stage")

FINAL_KEYS = ("reward/total", "reward/total_with_kl", "reward/r_code", "reward/r_expl", "reward/s_ut",
              "reward/s_cb", "reward/s_ex", "rollout/pass_rate", "rollout/no_code_rate",
              "rollout/response_length_mean", "objective/kl", "objective/entropy", "ppo/value_loss",
              "ppo/explained_variance", "ppo/clipfrac", "time/step", "time/judge_reward_share")


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


# ------------------------------------------------------------------------------------------------ setup

def build_reward(cfg: DictConfig):
    """The ``reward`` group as a ``CompositeReward``; a bad weight or an unknown component is a ConfigError."""
    if cfg.get("reward") is None:
        raise ConfigError("reward: the RL stage needs a reward config; add `- /reward: ledex` to the experiment's "
                          "defaults (conf/exp/rl_quickstart.yaml does) or pass +reward=ledex")
    from selfdebug.core.cli import user_error_in

    try:
        return hydra.utils.instantiate(cfg.reward, _convert_="all")
    except Exception as exc:
        cause = user_error_in(exc)
        if cause is not None:
            raise cause from None
        raise


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def resolve_sft_checkpoint(value) -> Path | None:
    """``rl.sft_checkpoint`` as a model folder: the SFT run's ``model/`` folder or the run dir holding it."""
    if value is None or str(value).strip() == "":
        return None
    path = Path(str(value)).expanduser()
    hint = ("point rl.sft_checkpoint at the model/ folder an SFT run writes (python -m selfdebug.train "
            "+exp=sft_quickstart writes <run dir>/model), or set rl.sft_checkpoint=null to start from "
            "model.name_or_path")
    if not path.exists():
        raise ConfigError(f"rl.sft_checkpoint: {str(path)!r} does not exist; {hint}")
    if not _is_model_dir(path) and _is_model_dir(path / "model"):
        path = path / "model"
    if not _is_model_dir(path):
        raise ConfigError(f"rl.sft_checkpoint: {str(path)!r} holds no saved model (no config.json or "
                          f"adapter_config.json); {hint}")
    return path


def load_policy(source: str, dtype, cfg: DictConfig):
    """``(model, tokenizer)`` of the starting policy. An SFT LoRA adapter is merged into its base first, so
    that disabling the RL adapters gives back the SFT model (the reference policy)."""
    from selfdebug.core.models import load_causal_lm

    tiny_cache = OmegaConf.select(cfg, "model.generator.tiny_cache_dir")
    remote = bool(cfg.get("trust_remote_code", False))
    adapter = Path(source) / "adapter_config.json"
    if not adapter.is_file():
        model, tokenizer = load_causal_lm(source, dtype=dtype, device="cpu", tiny_cache_dir=tiny_cache,
                                          trust_remote_code=remote)
        return model, tokenizer, False
    from peft import PeftModel
    from transformers import AutoTokenizer

    base_name = json.loads(adapter.read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ConfigError(f"rl.sft_checkpoint: {adapter} names no base_model_name_or_path")
    base, _ = load_causal_lm(base_name, dtype=dtype, device="cpu", tiny_cache_dir=tiny_cache,
                             trust_remote_code=remote)
    model = PeftModel.from_pretrained(base, source).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer, True


def final_figures(history: list[dict], window: int) -> dict:
    """The mean of each headline figure over the last ``window`` steps."""
    import math

    tail = history[-window:]
    out = {}
    for key in FINAL_KEYS:
        values = [h[key] for h in tail if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
        if values:
            out[key] = sum(values) / len(values)
    return out


def check_data_parallel(settings, world: int, strategy: str) -> None:
    """The step's prompts split evenly over ``world`` ranks, and each rank's share of a minibatch splits into
    micro-batches; under DeepSpeed one micro-batch per rank and optimizer step."""
    if settings.prompts_per_step % world:
        raise ConfigError(f"rl.batch_size = {settings.batch_size} ({settings.prompts_per_step} prompts x "
                          f"rl.samples_per_prompt = {settings.samples_per_prompt}): the prompts of a step must split "
                          f"evenly over trainer.devices = {world}")
    from selfdebug.train.distributed import check_divisible

    per_rank = check_divisible(settings.mini_batch_size, settings.micro_batch_size, world,
                               ("rl.mini_batch_size", "rl.micro_batch_size"))
    if strategy == "deepspeed" and per_rank != 1:
        raise ConfigError(f"rl.micro_batch_size = {settings.micro_batch_size}: under trainer=deepspeed each rank runs "
                          f"one micro-batch per optimizer step; set rl.micro_batch_size="
                          f"{settings.mini_batch_size // world} (rl.mini_batch_size / trainer.devices)")


# ------------------------------------------------------------------------------------------------ run

def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    import torch

    from selfdebug.execution import Sandbox, SandboxConfig
    from selfdebug.train.data import load_records
    from selfdebug.train.distributed import (
        build_trainer,
        check_launch,
        check_trainer,
        full_parameters,
        rank_fingerprints,
        summed_over_ranks,
    )
    from selfdebug.train.rl.module import (
        PPOCheckpoint,
        PPOModule,
        PPOSettings,
        PromptStream,
        build_items,
        check_has_wrong_solutions,
    )
    from selfdebug.train.sft.module import (
        LoraSettings,
        apply_lora,
        check_target_modules,
        enable_gradient_checkpointing,
        latest_checkpoint,
        resume_checkpoint,
        save_final,
    )
    from selfdebug.rewards import ReferenceIndex
    from selfdebug.train.app import run_logger_for, trainer_config, weights_dtype

    run_dir = Path(run_dir) if run_dir is not None else Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = run_dir / "model"
    if (model_dir / "selfdebug_sft.json").exists() and (run_dir / "summary.json").exists():
        done = json.loads((run_dir / "summary.json").read_text())
        if done.get("stage") == "rl" and done.get("finished"):
            print(f"training already complete: {model_dir}", flush=True)
            return done

    # ---- setup: every check that can fail, before the Trainer starts
    if str(cfg.get("stage")) != "rl":
        raise ConfigError(f"stage = {cfg.get('stage')!r}; the RL entry point runs stage=rl (use +exp=rl_quickstart)")
    seed = int(cfg.seed)
    seed_everything(seed)
    if cfg.get("rl") is None:
        raise ConfigError("rl: no PPO settings; add `- /rl: default` to the experiment's defaults")
    missing = [k for k in cfg.rl if OmegaConf.is_missing(cfg.rl, k)]
    if missing:
        raise ConfigError(f"rl.{missing[0]} must be set (the experiment leaves it to you), e.g. "
                          f"rl.sft_checkpoint=outputs/train/sft/<model>/<time>/model")
    settings = PPOSettings.from_dict(_container(cfg.rl))
    lora = LoraSettings(**_container(cfg.get("peft") or {}))
    tcfg = trainer_config(cfg)
    strategy = check_trainer(tcfg, lora=lora.enabled, merge=lora.merge)
    reward = build_reward(cfg)
    sft_path = resolve_sft_checkpoint(settings.sft_checkpoint)
    sandbox_config = SandboxConfig(**_container(cfg.get("sandbox") or {}))
    dataset_path = OmegaConf.select(cfg, "dataset.path")
    if dataset_path is None:
        raise ConfigError("dataset.path is not set; point it at a collection's dataset folder")
    trajectories, _ = load_records(dataset_path)
    check_has_wrong_solutions(trajectories, dataset_path)
    references = reward.attach_references(ReferenceIndex.from_records(rec for _, rec in trajectories))
    if reward.fallback == "error":
        missing = sorted({str(r["wrong_id"]) for _, r in trajectories} - set(references.refinements))
        if missing:
            raise DataError(f"dataset.path: {len(missing)} wrong program(s) have no verified refinement (e.g. "
                            f"{missing[0]}) and reward.fallback=error; set reward.fallback=unit_tests")
    if reward.uses_explanation and settings.mode == "explain_refine":
        reward.scorer  # noqa: B018 - load the embedding model now: a bad reward.explanation_model fails here

    source = str(sft_path) if sft_path is not None else str(cfg.model.name_or_path)
    dtype = weights_dtype(settings.dtype, lora.enabled, str(cfg.trainer.get("accelerator", "cpu")))
    policy, tokenizer, sft_was_adapter = load_policy(source, dtype, cfg)
    if strategy == "fsdp" and lora.enabled and sft_was_adapter:
        raise ConfigError(f"rl.sft_checkpoint: {source} is a LoRA adapter, so the RL adapter must be merged into "
                          "its base when saved, which trainer=fsdp does not do; use trainer=ddp with peft=lora, or "
                          "merge the SFT adapter first (peft.merge=true in the SFT run)")
    items, counts = build_items(trajectories, tokenizer, settings.mode, settings.offline, settings.max_prompt_length)
    if not items:
        raise DataError(f"dataset.path: every one of the {counts['wrong_programs']} wrong programs' prompts is "
                        f"longer than rl.max_prompt_length = {settings.max_prompt_length} tokens; raise it")
    if lora.enabled:
        check_target_modules(policy, lora.target_modules)
        policy = apply_lora(policy, lora)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    policy.train()
    n_trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    log.info("RL: %d prompts (%s), %d PPO steps of %d rollouts (%d x %d), %s trainable policy parameters, from %s",
             len(items), "offline: teacher answers" if settings.offline else "online", settings.total_steps,
             settings.batch_size, settings.prompts_per_step, settings.samples_per_prompt, f"{n_trainable:,}", source)

    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = resume_checkpoint(cfg.get("resume", "auto"), ckpt_dir)

    # The Trainer knows the ranks: built now (nothing starts until fit), so the batch checks still come first.
    callbacks = [PPOCheckpoint(ckpt_dir, settings.checkpoint_every, settings.keep_checkpoints, settings.stop_after,
                               settings.total_steps)]
    trainer = build_trainer(tcfg, lora=lora.enabled, max_grad_norm=settings.max_grad_norm, max_epochs=1,
                            max_steps=-1, callbacks=callbacks, default_root_dir=str(run_dir),
                            enable_checkpointing=False, logger=False, use_distributed_sampler=False)
    world = trainer.world_size
    check_data_parallel(settings, world, strategy)
    check_launch(trainer)
    rank0 = trainer.is_global_zero

    # ---- train
    run_logger = run_logger_for(trainer, cfg, run_dir, "rl")
    sandbox = Sandbox(sandbox_config)  # one per rank: each judges its own rollouts
    exit_code, start = 1, time.time()
    try:
        module = PPOModule(policy, tokenizer, reward, sandbox, items, settings, seed=seed, lora=lora.enabled,
                           run_logger=run_logger if rank0 else None, run_dir=run_dir if rank0 else None)
        stream = PromptStream(len(items), settings.prompts_per_step, settings.total_steps, seed=seed)
        if ckpt_path is not None:
            log.info("resuming from %s", ckpt_path)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*is not a `DataLoader`.*")
            trainer.fit(module, train_dataloaders=stream, ckpt_path=str(ckpt_path) if ckpt_path else None)
        steps = module.ppo_step
        finished = steps >= settings.total_steps
        summary = {"stage": "rl", "model": cfg.model.name, "policy_init": source, "steps": steps,
                   "total_steps": settings.total_steps, "finished": finished, "mode": settings.mode,
                   "offline": settings.offline, "reward": reward.name, "weights": reward.weights,
                   "placement": reward.placement, "kl_coef_final": module.kl_ctl.value,
                   "peft": "lora" if lora.enabled else "none", "trainable_parameters": n_trainable,
                   "final": final_figures(module.history, settings.summary_window),
                   "first": final_figures(module.history[:1], 1), "seconds": round(time.time() - start, 2),
                   "resumed_from": str(ckpt_path) if ckpt_path else None,
                   "sandbox": summed_over_ranks(sandbox.stats()),  # every rank's sandbox, summed
                   "references": references.stats(), "devices": world, "strategy": strategy, **counts}
        ranks = rank_fingerprints(module, kl_coef=module.kl_ctl.value, ppo_step=module.ppo_step)
        if ranks is not None:  # every rank took part; each rank's values, in rank order
            summary["ranks"] = ranks
        if finished:
            # FSDP2: every rank gathers the full weights onto rank 0 (else these are None), and rank 0 writes
            with full_parameters(module.policy) as state, full_parameters(module.value_head) as head:
                if rank0:
                    torch.save(head if head is not None else module.value_head.state_dict(), run_dir / "value_head.pt")
                    save_final(module.policy, tokenizer, model_dir, merge_lora=lora.merge or sft_was_adapter,
                               state_dict=state,
                               info={"stage": "rl", "base": source, "steps": steps, "rl": _container(cfg.rl),
                                     "reward": _container(cfg.reward), "peft": _container(cfg.get("peft") or {}),
                                     "devices": world, "strategy": strategy})
                    summary["model_dir"] = str(model_dir)
        run_logger.summary(summary)
        if "model_dir" in summary:  # the W&B model artifact (logger.artifacts.model: reference by default)
            run_logger.artifact(model_dir, name=f"rl-{cfg.model.name}", type="model")
        exit_code = 0
    finally:
        sandbox.close()
        run_logger.finish(exit_code)
    if not rank0:
        return summary
    if finished:
        final = summary["final"]
        print(f"RL done: {steps} PPO steps, reward {final.get('reward/total', float('nan')):.3f}, pass rate "
              f"{final.get('rollout/pass_rate', float('nan')):.3f}; model: {model_dir}", flush=True)
    else:
        print(f"RL stopped after step {steps} of {settings.total_steps} (rl.stop_after); run the command again with "
              f"hydra.run.dir={run_dir} and without rl.stop_after (or a larger one) to resume from "
              f"{latest_checkpoint(ckpt_dir)}", flush=True)
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
