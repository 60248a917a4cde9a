"""The RL stage (``stage=rl``): PPO from the SFT model with the span-level composite reward.

    python -m selfdebug.train +exp=rl_quickstart                      # offline: tiny model, quickstart dataset
    python -m selfdebug.train +exp=rl_7b rl.sft_checkpoint=outputs/train/sft/codellama_7b/<time>/model
    python -m selfdebug.train --multirun +exp=rl_quickstart reward.weights.explanation=0,0.5,1 seed=1,2,3

The run dir gets metrics.jsonl (every reward term, KL, entropy, clipping, value loss, explained variance,
lengths, pass rate, sandbox counts, time split), rollouts.jsonl (sampled rollouts, also a W&B table),
summary.json, the W&B run, ``checkpoints/`` (resumable) and, once training is done, ``model/`` (and
``value_head.pt``). What RL adds to the shared lifecycle (``selfdebug.train.lifecycle``): the reward, the SFT
checkpoint as the starting policy, the RL prompts, the sandbox and the ``PPOModule``; all checked before the
Trainer starts.
"""

from __future__ import annotations

import json
import logging
from contextlib import closing
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.answers import answer_form_of
from selfdebug.core.cli import user_error_in
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.models import load_causal_lm
from selfdebug.core.prompts import apply_chat_format
from selfdebug.execution import Sandbox, SandboxConfig
from selfdebug.rewards import ReferenceIndex
from selfdebug.train import lifecycle
from selfdebug.train.data import load_records
from selfdebug.train.distributed import check_divisible, check_launch, summed_over_ranks
from selfdebug.train.model import check_target_modules, count_trainable, prepare_for_training, weights_dtype
from selfdebug.train.repair_eval import make_repair_eval
from selfdebug.train.rl.data import PromptStream, build_items, check_has_wrong_solutions, draw_prompts
from selfdebug.train.rl.engines.vllm import check_rollout_world
from selfdebug.train.rl.metrics import final_figures
from selfdebug.train.rl.module import PPOCheckpoint, PPOModule
from selfdebug.train.rl.settings import SFT_CHECKPOINT_HINT, PPOSettings
from selfdebug.train.settings import settings_from

log = logging.getLogger("selfdebug.train.rl")


# ------------------------------------------------------------------------------------------------ setup

def build_reward(cfg: DictConfig):
    """The ``reward`` group as a ``CompositeReward``; a bad weight or an unknown component is a ConfigError."""
    if cfg.get("reward") is None:
        raise ConfigError("reward: the RL stage needs a reward config; add `- /reward: ledex` to the experiment's "
                          "defaults (conf/exp/rl_quickstart.yaml does) or pass +reward=ledex")
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
    """``(model, tokenizer, was_adapter)`` of the starting policy. An SFT LoRA adapter is merged into its base
    first, so that disabling the RL adapters gives back the SFT model (the reference policy)."""
    tiny_cache = OmegaConf.select(cfg, "model.generator.tiny_cache_dir")
    remote = bool(cfg.get("trust_remote_code", False))
    attention = OmegaConf.select(cfg, "model.attn_implementation")
    adapter = Path(source) / "adapter_config.json"
    if not adapter.is_file():
        model, tokenizer = load_causal_lm(source, dtype=dtype, device="cpu", tiny_cache_dir=tiny_cache,
                                          trust_remote_code=remote, attn_implementation=attention)
        return model, tokenizer, False
    from peft import PeftModel
    from transformers import AutoTokenizer

    base_name = json.loads(adapter.read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ConfigError(f"rl.sft_checkpoint: {adapter} names no base_model_name_or_path")
    base, _ = load_causal_lm(base_name, dtype=dtype, device="cpu", tiny_cache_dir=tiny_cache,
                             trust_remote_code=remote, attn_implementation=attention)
    model = PeftModel.from_pretrained(base, source).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer, True


def check_data_parallel(settings: PPOSettings, world: int, strategy: str) -> None:
    """The step's prompts split evenly over ``world`` ranks, and each rank's share of a minibatch splits into
    micro-batches; under DeepSpeed one micro-batch per rank and optimizer step; vLLM rollouts on one rank."""
    if settings.prompts_per_step % world:
        raise ConfigError(f"rl.batch_size = {settings.batch_size} ({settings.prompts_per_step} prompts x "
                          f"rl.samples_per_prompt = {settings.samples_per_prompt}): the prompts of a step must split "
                          f"evenly over trainer.devices = {world}")
    per_rank = check_divisible(settings.mini_batch_size, settings.micro_batch_size, world,
                               ("rl.mini_batch_size", "rl.micro_batch_size"))
    if strategy == "deepspeed" and per_rank != 1:
        raise ConfigError(f"rl.micro_batch_size = {settings.micro_batch_size}: under trainer=deepspeed each rank runs "
                          f"one micro-batch per optimizer step; set rl.micro_batch_size="
                          f"{settings.mini_batch_size // world} (rl.mini_batch_size / trainer.devices)")
    if settings.rollout_engine == "vllm":
        check_rollout_world(world)


def load_references(reward, trajectories):
    """The verified refinements and explanations the reward compares with, by wrong program."""
    return reward.attach_references(ReferenceIndex.from_records(rec for _, rec in trajectories))


def check_items(items, counts: dict, settings: PPOSettings, reward, references) -> None:
    """Some prompts are left, and under ``reward.fallback=error`` each has a verified refinement."""
    if not items:
        raise DataError(f"dataset.path: no RL prompt is left of {counts['wrong_programs']} wrong programs: "
                        f"{dropped_text(counts)}; {counts['rl_prompts_too_long']} over rl.max_prompt_length = "
                        f"{settings.max_prompt_length} tokens. Check rl.sources = {settings.sources} against the "
                        "records' `source`, set rl.require_reference=false, or raise rl.max_prompt_length")
    if reward.fallback == "error":
        missing = sorted({it.wrong_id for it in items} - set(references.refinements))
        if missing:
            raise DataError(f"dataset.path: {len(missing)} wrong program(s) have no verified refinement (e.g. "
                            f"{missing[0]}) and reward.fallback=error; set rl.require_reference=true to leave "
                            "them out, or reward.fallback=unit_tests")


def dropped_text(counts: dict) -> str:
    """The dropped wrong programs, by reason and source, for the log."""
    parts = [f"{n} of source {src!r} (not in rl.sources)" for src, n in counts["rl_dropped_source"].items()]
    parts += [f"{n} of source {src!r} without a verified refinement (rl.require_reference)"
              for src, n in counts["rl_dropped_no_reference"].items()]
    return "dropped " + ", ".join(parts) if parts else "none dropped"


# ------------------------------------------------------------------------------------------------ run

def run(cfg: DictConfig, run_dir: Path) -> dict:
    done = lifecycle.finished_summary(run_dir, "rl")
    if done is not None:
        return done
    # ---- setup: every check that can fail, before the Trainer starts
    run = lifecycle.begin(cfg, run_dir, "rl")
    settings = settings_from(PPOSettings, cfg.get("rl"), "rl", missing_hint=SFT_CHECKPOINT_HINT)
    lora = run.lora
    reward = build_reward(cfg)
    sft_path = resolve_sft_checkpoint(settings.sft_checkpoint)
    sandbox_config = SandboxConfig(**lifecycle.container(cfg.get("sandbox")))
    dataset_path = OmegaConf.select(cfg, "dataset.path")
    if dataset_path is None:
        raise ConfigError("dataset.path is not set; point it at a collection's dataset folder")
    trajectories, _ = load_records(dataset_path)
    check_has_wrong_solutions(trajectories, dataset_path)
    references = load_references(reward, trajectories)
    if reward.uses_explanation and settings.mode != "refine":
        reward.scorer  # noqa: B018 - load the embedding model now: a bad reward.explanation_model fails here

    source = str(sft_path) if sft_path is not None else str(cfg.model.name_or_path)
    dtype = weights_dtype(settings.dtype, lora.enabled, str(cfg.trainer.get("accelerator", "cpu")))
    policy, tokenizer, sft_was_adapter = load_policy(source, dtype, cfg)
    apply_chat_format(tokenizer, OmegaConf.select(cfg, "model.chat_format", default="template"))  # before rendering
    if run.strategy == "fsdp" and lora.enabled and sft_was_adapter:
        raise ConfigError(f"rl.sft_checkpoint: {source} is a LoRA adapter, so the RL adapter must be merged into "
                          "its base when saved, which trainer=fsdp does not do; use trainer=ddp with peft=lora, or "
                          "merge the SFT adapter first (peft.merge=true in the SFT run)")
    answer_form = answer_form_of(cfg, source)  # an SFT checkpoint records the form it was trained on
    items, counts = build_items(trajectories, tokenizer, settings.mode, settings.offline, settings.max_prompt_length,
                                seed=run.seed, sources=settings.sources,
                                references=set(references.refinements) if settings.require_reference else None,
                                answer_form=answer_form)
    check_items(items, counts, settings, reward, references)
    log.info("RL data: %d of %d wrong programs become prompts (%s; %d over rl.max_prompt_length); formats %s",
             len({it.wrong_id for it in items}), counts["wrong_programs"], dropped_text(counts),
             counts["rl_prompts_too_long"], counts["rl_items_by_mode"])
    if settings.max_prompts is not None:
        items = draw_prompts(items, settings.max_prompts, run.seed)
        counts["rl_items_drawn"] = len(items)
        log.info("RL data: rl.max_prompts = %d: trained on a seeded draw of that many wrong programs (%d prompts)",
                 settings.max_prompts, len(items))
    if lora.enabled:
        check_target_modules(policy, lora.target_modules)
    policy = prepare_for_training(policy, lora, settings.gradient_checkpointing)
    n_trainable = count_trainable(policy)
    log.info("RL: %d prompts (%s), %d PPO steps of %d rollouts (%d x %d), %s trainable policy parameters, from %s",
             len(items), "offline: teacher answers" if settings.offline else "online", settings.total_steps,
             settings.batch_size, settings.prompts_per_step, settings.samples_per_prompt, f"{n_trainable:,}", source)
    ckpt_path = lifecycle.resume_from(run)
    trainer = lifecycle.build(run, max_steps=-1, max_grad_norm=settings.max_grad_norm, callbacks=[
        PPOCheckpoint(run.ckpt_dir, settings.checkpoint_every, settings.keep_checkpoints, settings.stop_after,
                      settings.total_steps)])
    check_data_parallel(settings, trainer.world_size, run.strategy)
    check_launch(trainer)
    rank0 = trainer.is_global_zero

    # ---- train (a sandbox per rank: each judges its own rollouts)
    with lifecycle.tracked(run, trainer) as run_logger, closing(Sandbox(sandbox_config)) as sandbox:
        module = PPOModule(policy, tokenizer, reward, sandbox, items, settings, seed=run.seed, lora=lora.enabled,
                           run_logger=run_logger if rank0 else None, run_dir=run.run_dir if rank0 else None)
        stream = PromptStream(len(items), settings.prompts_per_step, settings.total_steps, seed=run.seed)
        repair = make_repair_eval(settings.repair_eval, tokenizer=tokenizer, answer_form=answer_form, trainer=trainer,
                                  strategy=run.strategy, run_logger=run_logger, run_dir=run.run_dir,
                                  last_step=min(settings.total_steps, settings.stop_after or settings.total_steps),
                                  sandbox_config=sandbox_config, sandbox=sandbox, stage="rl")
        if repair is not None:
            trainer.callbacks.append(repair)
        lifecycle.fit(trainer, module, stream, ckpt_path)
        steps = module.ppo_step
        summary = {**lifecycle.common_summary(run, trainer, module, steps=steps, total_steps=settings.total_steps,
                                              trainable=n_trainable, resumed_from=ckpt_path,
                                              kl_coef=module.kl_ctl.value, ppo_step=module.ppo_step),
                   "policy_init": source, "mode": settings.mode, "sources": settings.sources,
                   "require_reference": settings.require_reference, "offline": settings.offline, "reward": reward.name,
                   "weights": reward.weights, "placement": reward.placement, "kl_coef_final": module.kl_ctl.value,
                   "final": final_figures(module.history, settings.summary_window),
                   "first": final_figures(module.history[:1], 1),
                   "sandbox": summed_over_ranks(sandbox.stats()),  # every rank's sandbox, summed
                   "references": references.stats(), **counts}
        if summary["finished"]:
            info = {"stage": "rl", "base": source, "answer_form": answer_form, "steps": steps,
                    "rl": lifecycle.container(cfg.rl),
                    "reward": lifecycle.container(cfg.reward), "peft": lifecycle.container(cfg.get("peft")),
                    "devices": trainer.world_size, "strategy": run.strategy}
            saved = lifecycle.save_model(run, trainer, module.policy, tokenizer, info=info,
                                         merge_lora=lora.merge or sft_was_adapter,
                                         extra={"value_head.pt": module.value_head})
            if saved is not None:
                summary["model_dir"] = str(saved)
        lifecycle.finish(run, run_logger, summary)
    if not rank0:
        return summary
    if summary["finished"]:
        final = summary["final"]
        print(f"RL done: {steps} PPO steps, reward {final.get('reward/total', float('nan')):.3f}, pass rate "
              f"{final.get('rollout/pass_rate', float('nan')):.3f}; model: {run.model_dir}", flush=True)
    else:
        print(lifecycle.stopped_message(run, steps, settings.total_steps, f"run the command again with hydra.run.dir="
                              f"{run.run_dir} and without rl.stop_after (or a larger one)"), flush=True)
    return summary
