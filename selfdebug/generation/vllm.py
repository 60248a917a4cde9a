"""The vLLM backend: ``VLLMGenerator`` for evaluation and collection, ``VLLMRolloutEngine`` for PPO rollouts.

vLLM is an optional extra (``pip install 'selfdebug[vllm]'``) and is imported only when an engine is built, so
this module imports without it. Prompts are rendered by ``selfdebug.core.prompts`` and tokenized by the model's own
transformers tokenizer, exactly as ``HFGenerator`` does; vLLM receives the token ids (it never renders or
tokenizes a prompt itself) and completions are decoded by the same tokenizer, so both backends see and write
the same text.

PPO: the engine holds a copy of the policy. Before each step's rollouts ``VLLMRolloutEngine.sync`` sends the
policy's current weights (LoRA adapters merged in: ``W + scale * B @ A``) under their Hugging Face names to
every vLLM worker, which reloads them in place (``LLM.collective_rpc("reload_weights")``: vLLM's own reload
path, which runs the model's ``load_weights`` and redoes any kernel repacking), then drops the prefix cache
computed with the old weights. vLLM's log-probs are not the training model's (other kernels, other
precision), so the PPO step recomputes old log-probs and values with the policy
(``rl.rollout_logprobs=recompute``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from selfdebug.core.errors import ConfigError
from selfdebug.generation.base import GenerationRequest, Generator, SamplingParams, cut_at_stop

INSTALL_HINT = "pip install 'selfdebug[vllm]'"
_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float": "float32",
           "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16"}


def import_vllm(key: str = "model.generator"):
    """The ``vllm`` module, or a ConfigError that names the extra to install."""
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            f"{key}: the vLLM backend needs the vllm package, which is not importable here ({exc}); install "
            f"the extra with `{INSTALL_HINT}` (README: 'vLLM backend' for CPU-only machines), or use the "
            "transformers backend (model=hf, rl.rollout_engine=hf)"
        ) from None
    return vllm


def vllm_dtype(dtype: Any, key: str = "model.generator.dtype") -> str:
    name = str(dtype).lower().removeprefix("torch.") if dtype is not None else "auto"
    if name not in _DTYPES:
        raise ConfigError(f"{key}: unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def resolve_model_dir(name_or_path: str, tiny_cache_dir: str | None = None) -> str:
    """What vLLM loads: the tiny model's saved folder, a local folder, or a hub id (as ``load_causal_lm``)."""
    from selfdebug.core.models import ensure_tiny, looks_local

    name = str(name_or_path)
    if name == "tiny":
        return str(ensure_tiny(tiny_cache_dir))
    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ConfigError(f"model.name_or_path: {expanded!r} holds no config.json; vLLM loads a folder saved "
                              "with save_pretrained (a LoRA adapter folder must be merged into its base first)")
        return expanded
    if looks_local(name):
        raise ConfigError(f"model.name_or_path: local path {name!r} does not exist; point it at a saved "
                          "checkpoint folder, a Hugging Face hub id (org/name), or 'tiny'")
    return name


def prompt_token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt, as ``HFGenerator`` encodes it: chat templates carry their own special
    tokens; plain StarChat text gets the tokenizer's."""
    add_special = not getattr(tokenizer, "chat_template", None)
    return list(tokenizer.encode(text, add_special_tokens=add_special))


def stop_token_ids(tokenizer, stop: Sequence[str]) -> list[int]:
    """The eos token and every stop string that is a single token: generation ends there."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    for s in stop:
        enc = tokenizer.encode(s, add_special_tokens=False) if s else []
        if len(enc) == 1:
            ids.add(int(enc[0]))
    return sorted(ids)


def request_seeds(seed: int, n_requests: int, n: int) -> list[int]:
    """One seed per request. vLLM gives the j-th of a request's ``n`` samples ``seed + j``, so requests are
    ``n`` apart: identical prompts in one call still get different samples, and every sample has its own seed."""
    base = (int(seed) * 1_000_003) % (2**31 - 1)
    return [base + i * n for i in range(n_requests)]


def sampling_kwargs(params: SamplingParams, n_requests: int, stop: Sequence[str],
                    stop_ids: Sequence[int]) -> list[dict]:
    """``vllm.SamplingParams`` keyword arguments per request. temperature 0 is greedy (vLLM's own convention),
    and vLLM refuses ``n > 1`` with it: a greedy request asks for one completion, which ``VLLMGenerator``
    repeats ``n`` times (as ``HFGenerator`` returns n equal ones). top_k stays off (pure nucleus sampling, as
    ``HFGenerator`` samples)."""
    greedy = params.greedy
    common = {"n": 1 if greedy else params.n, "temperature": 0.0 if greedy else float(params.temperature),
              "top_p": 1.0 if greedy else float(params.top_p), "top_k": 0,
              "max_tokens": int(params.max_new_tokens), "stop": [s for s in stop if s],
              "stop_token_ids": list(stop_ids), "skip_special_tokens": True}
    return [{**common, "seed": s} for s in request_seeds(params.seed, n_requests, params.n)]


def _engine_env(in_process: bool, vllm) -> None:
    """vLLM reads its process mode from the environment when an engine starts, and caches the environment
    once one has started in this process; clear that cache so this engine's choice counts."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    envs = getattr(vllm, "envs", None)
    if envs is not None and hasattr(envs, "disable_envs_cache"):
        envs.disable_envs_cache()


def _start_engine(vllm, key: str, **kwargs):
    """``vllm.LLM(**kwargs)``; its ValueErrors are configuration errors (memory, lengths, dtype) -> ConfigError."""
    try:
        return vllm.LLM(**kwargs)
    except ValueError as exc:
        hint = ""
        if "memory" in str(exc).lower():
            hint = (f"; lower {key}.gpu_memory_utilization, or (CPU build, where this process's own memory counts "
                    f"against it) give the KV cache a size: {key}.engine_kwargs.kv_cache_memory_bytes")
        raise ConfigError(f"{key}: vLLM could not start an engine for {kwargs.get('model')!r}: {exc}{hint}") from exc


def _check_engine_settings(tensor_parallel_size: int, gpu_memory_utilization: float, max_model_len: int | None,
                           key: str) -> None:
    if isinstance(tensor_parallel_size, bool) or not isinstance(tensor_parallel_size, int) \
            or tensor_parallel_size < 1:
        raise ConfigError(f"{key}.tensor_parallel_size: must be an integer >= 1, got {tensor_parallel_size!r}")
    if not 0 < float(gpu_memory_utilization) <= 1:
        raise ConfigError(f"{key}.gpu_memory_utilization: must be in (0, 1], got {gpu_memory_utilization!r} "
                          "(on a CPU build it is the fraction of RAM vLLM reserves)")
    if max_model_len is not None and (isinstance(max_model_len, bool) or int(max_model_len) < 1):
        raise ConfigError(f"{key}.max_model_len: must be an integer >= 1 or null, got {max_model_len!r}")


class VLLMGenerator(Generator):
    """Batched sampling with a vLLM engine (continuous batching, paged KV cache).

    ``params.n`` samples per request come from one vLLM request (its prompt is prefilled once). Sampling is
    seeded per request from ``params.seed`` (``request_seeds``), so the same call gives the same completions;
    they differ from ``HFGenerator``'s samples for the same seed (other RNG, other kernels).
    """

    def __init__(self, model_name_or_path: str, *, dtype: Any = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 enforce_eager: bool = False, in_process: bool = False, seed: int = 0,
                 stop: Sequence[str] = ("<|end|>",), tiny_cache_dir: str | None = None,
                 trust_remote_code: bool = False, show_progress: bool = True,
                 engine_kwargs: dict | None = None):
        key = "model.generator"
        _check_engine_settings(tensor_parallel_size, gpu_memory_utilization, max_model_len, key)
        engine_dtype = vllm_dtype(dtype)
        if engine_kwargs is not None and not isinstance(engine_kwargs, dict):
            raise ConfigError(f"{key}.engine_kwargs: must be a mapping of vllm.LLM arguments, got {engine_kwargs!r}")
        vllm = import_vllm(key)
        from transformers import AutoTokenizer

        self.model_name_or_path = str(model_name_or_path)
        self.stop = tuple(stop)
        self.show_progress = show_progress
        path = resolve_model_dir(model_name_or_path, tiny_cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.stop_ids = stop_token_ids(self.tokenizer, self.stop)
        _engine_env(in_process, vllm)
        self.llm = _start_engine(
            vllm, key, model=path, tokenizer=path, dtype=engine_dtype, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=float(gpu_memory_utilization), max_model_len=max_model_len,
            enforce_eager=bool(enforce_eager), seed=int(seed), trust_remote_code=trust_remote_code,
            **(engine_kwargs or {}))
        self._vllm = vllm

    @property
    def name(self) -> str:
        return f"vllm:{self.model_name_or_path}"

    def render(self, messages: list[dict]) -> str:
        from selfdebug.core.prompts import render_chat

        return render_chat(messages, self.tokenizer, add_generation_prompt=True)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[str]]:
        if not requests:
            return []
        if self.llm is None:
            raise RuntimeError("the vLLM generator was closed; build a new one")
        prompts = [{"prompt_token_ids": prompt_token_ids(self.tokenizer, self.render(r.messages))} for r in requests]
        sampling = [self._vllm.SamplingParams(**kw)
                    for kw in sampling_kwargs(params, len(requests), self.stop, self.stop_ids)]
        outputs = self.llm.generate(prompts, sampling, use_tqdm=self.show_progress)
        stop_ids = set(self.stop_ids)
        out = []
        for o in outputs:
            texts = []
            for c in sorted(o.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                end = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
                # Decoded by our tokenizer, as HFGenerator decodes: the same ids give the same text.
                texts.append(cut_at_stop(self.tokenizer.decode(ids[:end], skip_special_tokens=True), self.stop))
            out.append(texts * params.n if params.greedy else texts)
        return out

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        _shutdown(llm)


def _shutdown(llm) -> None:
    import gc

    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()  # ends the engine process (multiprocess mode) and frees the KV cache
    del llm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ------------------------------------------------------------------------------------------------ PPO weight sync

def _lora_delta(module):
    """``scale * B @ A`` summed over a LoRA layer's active adapters; None when they do not act."""
    import torch

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

    def __init__(self, policy, tokenizer, *, dtype: Any = "auto", gpu_memory_utilization: float = 0.3,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, enforce_eager: bool = True,
                 in_process: bool = True, seed: int = 0, engine_kwargs: dict | None = None):
        key = "rl.vllm"
        _check_engine_settings(tensor_parallel_size, gpu_memory_utilization, max_model_len, key)
        engine_dtype = vllm_dtype(dtype, f"{key}.dtype")
        vllm = import_vllm(key)
        self._vllm = vllm
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
        _engine_env(in_process, vllm)
        try:
            self.llm = _start_engine(
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

    def generate(self, prompts: Sequence[Sequence[int]], *, temperature: float, top_p: float, max_new_tokens: int,
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
        _shutdown(llm)
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


# ------------------------------------------------------------------------------------------------ PPO hooks

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
    _check_engine_settings(engine.get("tensor_parallel_size", 1), engine.get("gpu_memory_utilization", 0.3),
                           engine.get("max_model_len"), "rl.vllm")
    if engine.get("max_model_len") is not None and int(engine["max_model_len"]) < settings.max_prompt_length + 1:
        raise ConfigError(f"rl.vllm.max_model_len = {engine['max_model_len']} is shorter than rl.max_prompt_length "
                          f"= {settings.max_prompt_length} + a response; raise it or set it to null")
    vllm_dtype(engine.get("dtype", "auto"), "rl.vllm.dtype")
    import_vllm("rl.rollout_engine=vllm")


def vllm_rollout(module, prompts: list[list[int]]) -> list[list[int]]:
    """``PPOModule.generate`` with ``rl.rollout_engine=vllm``: sampled response ids per prompt.

    The engine starts at the first rollout and gets the policy's weights at the first rollout of every PPO
    step (the weights change only in the update, between steps). The request seeds come from the step's
    seeded torch RNG, so a resumed run samples what an uninterrupted one would.
    """
    import torch

    s = module.settings
    engine = module.__dict__.get("_vllm_engine")
    if engine is None:
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            raise ConfigError(f"rl.rollout_engine=vllm runs one engine beside one training process; with "
                              f"{trainer.world_size} ranks (trainer.devices) use rl.rollout_engine=hf: one engine "
                              "per rank and weights gathered from FSDP/DeepSpeed shards are not implemented")
        kwargs = dict(s.vllm)
        # The longest sequence a rollout makes: the KV cache is sized for it, not for the model's whole context.
        if kwargs.get("max_model_len") is None:
            kwargs["max_model_len"] = s.max_prompt_length + s.max_new_tokens
        engine = module._vllm_engine = VLLMRolloutEngine(module.policy, module.tokenizer, seed=module.seed, **kwargs)
        module._vllm_synced_step = None
    if module._vllm_synced_step != module.ppo_step:
        engine.sync(module.policy)
        module._vllm_synced_step = module.ppo_step
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return engine.generate(prompts, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                           stop_ids=module.stop_ids, seed=seed)


def close_rollout_engine(module) -> None:
    engine = module.__dict__.pop("_vllm_engine", None)
    if engine is not None:
        engine.close()
