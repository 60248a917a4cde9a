"""The model being trained, as both stages prepare it: the weights' dtype, LoRA adapters, gradient
checkpointing, the token ids that end a generated answer, and the precision it generates in."""

from __future__ import annotations

import re

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import peft_base
from selfdebug.core.prompts import END
from selfdebug.train.settings import LoraSettings


def weights_dtype(dtype: str, lora: bool, accelerator: str):
    """``sft.dtype`` / ``rl.dtype``: ``auto`` is fp32 weights for full fine-tuning (AdamW updates at lr 2e-5
    vanish in bf16), the frozen base in bf16 under LoRA on a bf16 GPU (PEFT keeps the adapters in fp32)."""
    from selfdebug.core.models import resolve_dtype

    if dtype != "auto":
        return resolve_dtype(dtype, "cpu")
    gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if lora and gpu and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_target_modules(model, target_modules: list[str] | str) -> None:
    """Every LoRA target must name a module of ``model`` (PEFT's rule: a name equal to the target or ending
    in ``.target``; a string is a regex over full names; "all-linear" always works)."""
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(target_modules, str):
        if target_modules == "all-linear" or any(re.fullmatch(target_modules, n) for n in names):
            return
        missing = [target_modules]
    else:
        missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
        if not missing:
            return
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    raise ConfigError(f"peft.target_modules: {missing} match no module of {type(model).__name__}; its linear "
                      f"layers are named {linear} (or use peft.target_modules=all-linear)")


def apply_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, lora.target_modules)
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    config = LoraConfig(r=int(lora.r), lora_alpha=float(lora.alpha), lora_dropout=float(lora.dropout),
                        target_modules=targets, task_type="CAUSAL_LM", **dict(lora.extra))
    return get_peft_model(model, config)


def enable_gradient_checkpointing(model) -> None:
    base = peft_base(model)
    kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs (LoRA) without tricks
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False


def prepare_for_training(model, lora: LoraSettings, gradient_checkpointing: bool):
    """LoRA adapters (when ``peft.enabled``) and gradient checkpointing on, train mode: the model ``fit`` trains."""
    if lora.enabled:
        model = apply_lora(model, lora)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    return model


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def stop_token_ids(tokenizer, model) -> list[int]:
    ids = []
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    end = tokenizer.encode(END, add_special_tokens=False)
    if len(end) == 1:
        ids.append(int(end[0]))
    return sorted(set(ids))


def generation_context(trainer):
    """The precision to generate in during training: the trainer's autocast on an accelerator, fp32 on the CPU,
    where bf16 autocast makes token-by-token decoding slower (casts around small products) and fp32 is what
    ``selfdebug.evaluate`` runs, so in-training repair rates match the evaluation's."""
    if trainer.strategy.root_device.type == "cpu":
        return torch.autocast("cpu", enabled=False)  # also inside an autocast region (a training step)
    return trainer.precision_plugin.forward_context()
