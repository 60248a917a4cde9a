"""The vLLM rollout engine: a vLLM copy of the policy samples PPO's rollouts (``rl.rollout_engine=vllm``).

Before each step's rollouts ``sync`` sends the policy's current weights (LoRA adapters merged in:
``W + scale * B @ A``) under their Hugging Face names to every vLLM worker, which reloads them in place
(``LLM.collective_rpc("reload_weights")``: vLLM's own reload path, which runs the model's ``load_weights`` and
redoes any kernel repacking), then drops the prefix cache computed with the old weights. vLLM's log-probs are
not the training model's (other kernels, other precision), so the PPO step recomputes old log-probs and values
with the policy (``rl.rollout_logprobs=recompute``). vLLM is an optional extra, imported only when an engine
starts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.generation.vllm import (
    check_engine_settings,
    engine_env,
    import_vllm,
    request_seeds,
    shutdown_engine,
    start_engine,
    vllm_dtype,
)
from selfdebug.train.rl.engines.base import Samples, Sampling


def _lora_delta(module):
    """``scale * B @ A`` summed over a LoRA layer's active adapters; None when they do not act."""
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return None  # merged: already in the base weight; disabled: the adapters do not act
    active = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
    if not active:
        return None
    with torch.no_grad():
        return sum(module.get_delta_weight(a) for a in active)


def iter_policy_weights(model) -> Iterator[tuple[str, Any]]:
    """``(name, tensor)`` for each of the policy's weights as a plain Hugging Face checkpoint names them (what
    vLLM's ``load_weights`` reads). A PEFT model's LoRA layers come merged (``base + scale * B @ A``), one
    layer at a time and without changing the model; PEFT's name prefixes and LoRA tensors are left out. The
    other tensors are the model's own (detached, not copied)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lora_layers = {f"{name}.weight": module for name, module in base.named_modules()
                   if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight")}
    for name, tensor in base.state_dict(keep_vars=False).items():
        if ".lora_" in name or "lora_magnitude_vector" in name:
            continue
        name = name.replace(".base_layer.", ".")
        tensor = tensor.detach()
        if name in lora_layers:
            delta = _lora_delta(lora_layers.pop(name))
            if delta is not None:
                tensor = tensor + delta.to(tensor.dtype)
        yield name, tensor
    unplaced = sorted(n for n, m in lora_layers.items() if _lora_delta(m) is not None)
    if unplaced:  # vLLM would keep a stale weight for these
        raise ConfigError(f"peft: cannot place merged LoRA weights {unplaced[:3]} in the checkpoint names")


def policy_weights_for_vllm(model) -> dict:
    """``iter_policy_weights`` as a dict (every merged LoRA weight held at once)."""
    return dict(iter_policy_weights(model))


class VLLMRolloutEngine:
    """A vLLM engine that samples PPO rollouts from a copy of the policy.

    The engine starts from the policy's config and tokenizer only (``load_format=dummy``: no checkpoint is
    read) and gets every weight from ``sync``, which runs before the first rollout of every PPO step. It runs
    in this process (``in_process``), so a sync passes the policy's tensors by reference and the cost is one
    copy into vLLM's parameters: the model's size per step (7B in bf16: ~13.5 GB; under LoRA the merged
    weights are made one layer at a time). Worker processes (``in_process=false`` or tensor parallelism) read
    the weights from a safetensors file written for each sync: a disk write and read of the model per step.
    """

    def __init__(self, policy, tokenizer, *, sampling: Sampling | None = None, dtype: Any = "auto",
                 gpu_memory_utilization: float = 0.3, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 enforce_eager: bool = True, in_process: bool = True, seed: int = 0,
                 engine_kwargs: dict | None = None):
        key = "rl.vllm"
        check_engine_settings(tensor_parallel_size, gpu_memory_utilization, max_model_len, key)
        engine_dtype = vllm_dtype(dtype, f"{key}.dtype")
        vllm = import_vllm(key)
        self._vllm = vllm
        self.sampling = sampling
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        if engine_dtype == "auto":
            # the policy's own dtype: the engine samples what the policy would sample
            engine_dtype = str(next(base.parameters()).dtype).removeprefix("torch.")
        # config.json, generation_config.json and the tokenizer are all vLLM needs to build the model.
        self._dir = Path(tempfile.mkdtemp(prefix="selfdebug-vllm-policy-"))
        base.config.save_pretrained(self._dir)
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        self._by_reference = bool(in_process) and tensor_parallel_size == 1
        if not self._by_reference:
            self._write_weights(policy)  # worker processes reload from this file, so it must exist from the start
        engine_env(in_process, vllm)
        try:
            self.llm = start_engine(
                vllm, key, model=str(self._dir), tokenizer=str(self._dir), dtype=engine_dtype,
                load_format="dummy" if self._by_reference else "safetensors",
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=float(gpu_memory_utilization), max_model_len=max_model_len,
                enforce_eager=bool(enforce_eager), seed=int(seed), skip_tokenizer_init=True,
                **(engine_kwargs or {}))
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.syncs = 0
        self.bytes_per_sync = 0

    def _write_weights(self, policy) -> int:
        from safetensors.torch import save_file

        weights = {name: t.contiguous() for name, t in iter_policy_weights(policy)}
        save_file(weights, str(self._dir / "model.safetensors"))
        return sum(t.numel() * t.element_size() for t in weights.values())

    def sync(self, policy) -> None:
        """Send ``policy``'s current weights to every worker and forget KV blocks computed with the old ones.

        Each worker runs vLLM's in-place ``reload_weights`` (checkpoint format): the model's own ``load_weights``
        maps Hugging Face names onto vLLM's fused layers (qkv_proj, gate_up_proj), shards them under tensor
        parallelism, and redoes the kernel-specific repacking that followed the first load."""
        if self._by_reference:
            # One worker in this process: it takes the iterator itself (one merged LoRA layer alive at a time).
            sent = [0]

            def counted():
                for name, tensor in iter_policy_weights(policy):
                    sent[0] += tensor.numel() * tensor.element_size()
                    yield name, tensor

            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": counted(), "is_checkpoint_format": True})
            self.bytes_per_sync = sent[0]
        else:
            # Worker processes: tensors do not survive collective_rpc's serialization, so the weights go through
            # a safetensors file that every worker reloads (vLLM's reload from the model path).
            self.bytes_per_sync = self._write_weights(policy)
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_path": str(self._dir), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.syncs += 1

    def generate(self, prompts: Sequence[Sequence[int]]) -> Samples:
        """One response per prompt with the engine's ``sampling``. The request seeds come from torch's RNG, which
        the PPO step seeds: a resumed run samples what an uninterrupted one would."""
        s = self.sampling
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        return Samples(self.sample(prompts, temperature=s.temperature, top_p=s.top_p,
                                   max_new_tokens=s.max_new_tokens, stop_ids=s.stop_ids, seed=seed))

    def sample(self, prompts: Sequence[Sequence[int]], *, temperature: float, top_p: float, max_new_tokens: int,
               stop_ids: Iterable[int], seed: int, return_logprobs: bool = False):
        """One sampled response per prompt: token ids, the stop token kept when one ended it (the policy learns
        to stop from it). ``return_logprobs``: also vLLM's log-prob of each sampled token (a diagnostic only)."""
        stop_ids = sorted(int(t) for t in stop_ids)
        sampling = [self._vllm.SamplingParams(
            n=1, temperature=float(temperature), top_p=float(top_p), top_k=0, max_tokens=int(max_new_tokens),
            stop_token_ids=stop_ids, detokenize=False, seed=s, logprobs=0 if return_logprobs else None)
            for s in request_seeds(seed, len(prompts), 1)]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sampling, use_tqdm=False)
        ids_out, logprobs_out = [], []
        for o in outputs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            if isinstance(c.stop_reason, int) and (not ids or ids[-1] != c.stop_reason):
                ids.append(int(c.stop_reason))
            ids_out.append(ids)
            if return_logprobs:
                logprobs_out.append([step[t].logprob for step, t in zip(c.logprobs, c.token_ids)])
        return (ids_out, logprobs_out) if return_logprobs else ids_out

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        shutdown_engine(llm)
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


ROLLOUT_KEYS = ("dtype", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "enforce_eager",
                "in_process", "engine_kwargs")


def check_rollout_settings(settings) -> None:
    """``rl.rollout_engine=vllm`` with the rest of the ``rl`` block: checked before any model is loaded."""
    if settings.offline:
        raise ConfigError("rl.rollout_engine=vllm samples the policy, but rl.offline=true scores the collected "
                          "answers and samples nothing; set rl.offline=false or rl.rollout_engine=hf")
    if settings.rollout_logprobs != "recompute":
        raise ConfigError("rl.rollout_engine=vllm needs rl.rollout_logprobs=recompute: vLLM's log-probs come "
                          "from other kernels than the training model's, so the policy scores the rollouts again")
    engine = settings.vllm
    if not isinstance(engine, dict):
        raise ConfigError(f"rl.vllm: must be a mapping of engine settings ({', '.join(ROLLOUT_KEYS)}), got {engine!r}")
    unknown = sorted(set(engine) - set(ROLLOUT_KEYS))
    if unknown:
        raise ConfigError(f"rl.vllm.{unknown[0]}: no such engine setting; expected one of {', '.join(ROLLOUT_KEYS)}")
    check_engine_settings(engine.get("tensor_parallel_size", 1), engine.get("gpu_memory_utilization", 0.3),
                           engine.get("max_model_len"), "rl.vllm")
    if engine.get("max_model_len") is not None and int(engine["max_model_len"]) < settings.max_prompt_length + 1:
        raise ConfigError(f"rl.vllm.max_model_len = {engine['max_model_len']} is shorter than rl.max_prompt_length "
                          f"= {settings.max_prompt_length} + a response; raise it or set it to null")
    vllm_dtype(engine.get("dtype", "auto"), "rl.vllm.dtype")
    import_vllm("rl.rollout_engine=vllm")


def check_rollout_world(world: int) -> None:
    """One engine beside one training process: checked once the Trainer knows its ranks, before fit."""
    if world > 1:
        raise ConfigError(f"rl.rollout_engine=vllm runs one engine beside one training process; with {world} ranks "
                          "(trainer.devices) use rl.rollout_engine=hf: one engine per rank and weights gathered "
                          "from FSDP/DeepSpeed shards are not implemented")


def start_rollout_engine(settings, policy, tokenizer, sampling: Sampling, seed: int) -> VLLMRolloutEngine:
    """The engine for ``rl.vllm``; its KV cache is sized for the longest sequence a rollout makes
    (``rl.max_prompt_length + rl.max_new_tokens``) unless ``rl.vllm.max_model_len`` says otherwise."""
    kwargs = dict(settings.vllm)
    if kwargs.get("max_model_len") is None:
        kwargs["max_model_len"] = settings.max_prompt_length + settings.max_new_tokens
    return VLLMRolloutEngine(policy, tokenizer, sampling=sampling, seed=seed, **kwargs)
