"""The vLLM backend: ``VLLMGenerator`` for evaluation and collection, and the engine helpers that PPO's vLLM
rollout engine (``selfdebug.train.rl.engines.vllm``) shares with it.

vLLM is an optional extra (``pip install 'selfdebug[vllm]'``) and is imported only when an engine is built, so
this module imports without it. Prompts are rendered by ``selfdebug.core.prompts`` and tokenized by the model's own
transformers tokenizer, exactly as ``HFGenerator`` does; vLLM receives the token ids (it never renders or
tokenizes a prompt itself) and completions are decoded by the same tokenizer, so both backends see and write
the same text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def engine_env(in_process: bool, vllm) -> None:
    """vLLM reads its process mode from the environment when an engine starts, and caches the environment
    once one has started in this process; clear that cache so this engine's choice counts."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    envs = getattr(vllm, "envs", None)
    if envs is not None and hasattr(envs, "disable_envs_cache"):
        envs.disable_envs_cache()


def start_engine(vllm, key: str, **kwargs):
    """``vllm.LLM(**kwargs)``; its ValueErrors are configuration errors (memory, lengths, dtype) -> ConfigError."""
    try:
        return vllm.LLM(**kwargs)
    except ValueError as exc:
        hint = ""
        if "memory" in str(exc).lower():
            hint = (f"; lower {key}.gpu_memory_utilization, or (CPU build, where this process's own memory counts "
                    f"against it) give the KV cache a size: {key}.engine_kwargs.kv_cache_memory_bytes")
        raise ConfigError(f"{key}: vLLM could not start an engine for {kwargs.get('model')!r}: {exc}{hint}") from exc


def check_engine_settings(tensor_parallel_size: int, gpu_memory_utilization: float, max_model_len: int | None,
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
                 engine_kwargs: dict | None = None, chat_format: str = "template"):
        from selfdebug.core.prompts import apply_chat_format, check_chat_format

        key = "model.generator"
        check_chat_format(chat_format)
        check_engine_settings(tensor_parallel_size, gpu_memory_utilization, max_model_len, key)
        engine_dtype = vllm_dtype(dtype)
        if engine_kwargs is not None and not isinstance(engine_kwargs, dict):
            raise ConfigError(f"{key}.engine_kwargs: must be a mapping of vllm.LLM arguments, got {engine_kwargs!r}")
        vllm = import_vllm(key)
        from transformers import AutoTokenizer

        self.model_name_or_path = str(model_name_or_path)
        self.stop = tuple(stop)
        self.show_progress = show_progress
        path = resolve_model_dir(model_name_or_path, tiny_cache_dir)
        self.tokenizer = apply_chat_format(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
                                           chat_format, "model.chat_format")
        self.stop_ids = stop_token_ids(self.tokenizer, self.stop)
        engine_env(in_process, vllm)
        self.llm = start_engine(
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
        shutdown_engine(llm)


def shutdown_engine(llm, keep_world: bool = False) -> None:
    """End an engine and free its KV cache. ``keep_world``: the process's default ``torch.distributed`` group
    belongs to the caller (data-parallel training): vLLM's teardown destroys the groups it made and would
    destroy the default one too, which the training ranks still need."""
    import gc
    from contextlib import nullcontext

    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        with _default_group_kept() if keep_world else nullcontext():
            core.shutdown()  # ends the engine process (multiprocess mode) and frees the KV cache
    del llm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _default_group_kept():
    """While active, ``torch.distributed.destroy_process_group()`` (no group: the default one) does nothing;
    destroying a named group still works."""
    from contextlib import contextmanager

    import torch.distributed as dist

    @contextmanager
    def kept():
        real = dist.destroy_process_group

        def destroy(group=None):
            if group is not None:
                real(group)

        dist.destroy_process_group = destroy
        try:
            yield
        finally:
            dist.destroy_process_group = real

    return kept()
