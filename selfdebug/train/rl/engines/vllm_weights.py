"""What a sync hands the vLLM rollout engine, and in which form.

- ``iter_policy_weights``: the policy's weights under the Hugging Face checkpoint names vLLM's ``load_weights``
  reads, one tensor at a time (LoRA adapters merged in, or left out for the frozen base);
- ``save_adapter``: the policy's LoRA adapter as a PEFT folder (``adapter_config.json`` and
  ``adapter_model.safetensors``), which is what vLLM's ``LoRARequest`` loads;
- ``write_shards``: weights streamed into safetensors shards with an index, for engines in worker processes;
- ``adapter_sync_problem``: why an adapter cannot go to vLLM as an adapter (then the merged weights are sent).

Nothing here imports vLLM.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import peft_base

# vLLM's LoRA kernels are built for these ranks (``vllm.config.lora.MaxLoRARanks``).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vLLM loads these inits as a plain LoRA; PiSSA, OLoRA, LoftQ, CorDA change the base weights.
_PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def _lora_delta(module):
    """``scale * B @ A`` summed over a LoRA layer's active adapters; None when they do not act."""
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return None  # merged: already in the base weight; disabled: the adapters do not act
    active = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
    if not active:
        return None
    with torch.no_grad():
        return sum(module.get_delta_weight(a) for a in active)


def iter_policy_weights(model, merge_lora: bool = True) -> Iterator[tuple[str, Any]]:
    """``(name, tensor)`` for each of the policy's weights as a plain Hugging Face checkpoint names them (what
    vLLM's ``load_weights`` reads). PEFT's name prefixes and LoRA tensors are left out. ``merge_lora``: a LoRA
    layer comes merged (``base + scale * B @ A``, made one layer at a time without changing the model);
    otherwise the frozen base weight as it is. The other tensors are the model's own (detached, not copied)."""
    base = peft_base(model)
    lora_layers = {f"{name}.weight": module for name, module in base.named_modules()
                   if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight")}
    for name, tensor in base.state_dict(keep_vars=False).items():
        if ".lora_" in name or "lora_magnitude_vector" in name:
            continue
        name = name.replace(".base_layer.", ".")
        tensor = tensor.detach()
        if name in lora_layers:
            delta = _lora_delta(lora_layers.pop(name)) if merge_lora else None
            if delta is not None:
                tensor = tensor + delta.to(tensor.dtype)
        yield name, tensor
    unplaced = sorted(n for n, m in lora_layers.items() if merge_lora and _lora_delta(m) is not None)
    if unplaced:  # vLLM would keep a stale weight for these
        raise ConfigError(f"peft: cannot place merged LoRA weights {unplaced[:3]} in the checkpoint names")


def policy_weights_for_vllm(model) -> dict:
    """``iter_policy_weights`` as a dict (every merged LoRA weight held at once: for tests and small models)."""
    return dict(iter_policy_weights(model))


def nbytes(tensor) -> int:
    return tensor.numel() * tensor.element_size()


def lora_config(model):
    """The PEFT config of the policy's one active LoRA adapter, or None (no PEFT, or several adapters)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None
    configs, active = model.peft_config, list(model.active_adapters)
    if len(active) != 1 or active[0] not in configs:
        return None
    return configs[active[0]]


def lora_rank_cap(config) -> int:
    """The smallest rank vLLM's kernels take that holds every rank of the adapter."""
    rank = max([int(config.r), *(int(r) for r in (getattr(config, "rank_pattern", None) or {}).values())])
    for cap in VLLM_LORA_RANKS:
        if cap >= rank:
            return cap
    raise ConfigError(f"peft.r = {rank}: vLLM's LoRA kernels take ranks up to {VLLM_LORA_RANKS[-1]}; "
                      "lower it or set rl.vllm.sync=full (merged weights every step)")


def adapter_sync_problem(model) -> str | None:
    """Why the policy's trainable weights cannot reach vLLM as a LoRA adapter; None when they can."""
    config = lora_config(model)
    if config is None:
        return "the policy has no single active LoRA adapter (peft=none trains every weight)"
    if getattr(config, "peft_type", None) is not None and str(getattr(config.peft_type, "value",
                                                                         config.peft_type)) != "LORA":
        return f"the adapter is {config.peft_type}, not LoRA"
    if getattr(config, "use_dora", False):
        return "DoRA adapters (peft.extra.use_dora) are not supported by vLLM"
    if getattr(config, "lora_bias", False) or str(getattr(config, "bias", "none")) != "none":
        return "adapter biases (peft.extra.bias / lora_bias) are not supported by vLLM"
    if getattr(config, "modules_to_save", None):
        return "modules_to_save are fully trained weights, not an adapter"
    init = getattr(config, "init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _PLAIN_INITS:
        return f"init_lora_weights={init!r} changes the base weights"
    others = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    if others:
        return f"weights outside the adapter train too ({others[0]})"
    return None


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def save_adapter(model, folder: Path, dtype: torch.dtype | None = None) -> int:
    """The active LoRA adapter as a PEFT folder vLLM loads (written under a temporary name, then renamed);
    its tensors cast to ``dtype`` (the engine's: vLLM casts them on load anyway). Returns the bytes written."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = lora_config(model)
    name = model.active_adapters[0]
    state = get_peft_model_state_dict(model, adapter_name=name)
    tensors = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
               .contiguous().cpu() for k, v in state.items()}
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    settings = config.to_dict()
    for key, value in settings.items():  # sets (target_modules) are not JSON
        if isinstance(value, set):
            settings[key] = sorted(value)
    (tmp / "adapter_config.json").write_text(json.dumps(settings, indent=1, default=str) + "\n")
    _replace_dir(tmp, folder)
    return sum(nbytes(t) for t in tensors.values())


def write_shards(weights: Iterable[tuple[str, Any]], folder: Path, shard_bytes: int = 1 << 30) -> int:
    """Stream ``weights`` into ``model-NNNNN.safetensors`` shards of about ``shard_bytes`` plus
    ``model.safetensors.index.json`` (the layout vLLM reads): at most one shard is held in host memory. Old
    weight files in ``folder`` are removed first. Returns the bytes written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    for old in list(folder.glob("model*.safetensors")) + list(folder.glob("model.safetensors.index.json")):
        old.unlink()
    index: dict[str, str] = {}
    shard: dict[str, Any] = {}
    size = total = count = 0

    def flush():
        nonlocal shard, size, count
        if shard:
            name = f"model-{count:05d}.safetensors"
            save_file(shard, str(folder / name))
            index.update(dict.fromkeys(shard, name))
            shard, size, count = {}, 0, count + 1

    for name, tensor in weights:
        shard[name] = tensor.detach().contiguous().cpu()
        size += nbytes(tensor)
        total += nbytes(tensor)
        if size >= shard_bytes:
            flush()
    flush()
    index_file = {"metadata": {"total_size": total}, "weight_map": index}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=1) + "\n")
    return total
