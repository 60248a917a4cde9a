"""The vLLM rollout engine: a vLLM copy of the policy samples PPO's rollouts (``rl.rollout_engine=vllm``).

``sync`` runs before each step's first rollout and gives the engine the policy's current weights in one of two
ways (``rl.vllm.sync``):

- **adapter** (the default under LoRA): the engine holds the frozen base once (sent at the first sync) and
  serves the trained LoRA adapter through vLLM's LoRA support. Each sync writes the adapter as a PEFT folder
  and the rollouts name it in a ``LoRARequest`` with a new id, so a step moves the adapter (megabytes), not
  the model;
- **full** (``peft=none``, or an adapter vLLM cannot serve): every weight, LoRA merged in, streamed layer by
  layer into vLLM's in-place reload (``LLM.collective_rpc("reload_weights")``, which runs the model's
  ``load_weights`` and redoes any kernel repacking). Engine processes read them from safetensors shards
  written one at a time.

Each data-parallel rank runs its own engine beside its training process (``docs/scaling.md``: several ranks).
vLLM's log-probs are not the training model's (other kernels), so the PPO step re-scores every rollout with
the policy (``rl.rollout_logprobs=recompute``). vLLM is an optional extra, imported only when an engine starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import peft_base
from selfdebug.generation.vllm import (
    check_engine_settings,
    engine_env,
    import_vllm,
    shutdown_engine,
    start_engine,
    vllm_dtype,
)
from selfdebug.train.rl.engines.base import Samples, Sampling
from selfdebug.train.rl.engines.vllm_weights import (
    adapter_sync_problem,
    iter_policy_weights,
    lora_config,
    lora_rank_cap,
    nbytes,
    policy_weights_for_vllm,
    save_adapter,
    write_shards,
)

__all__ = ["VLLMRolloutEngine", "check_rollout_settings", "check_rollout_world", "iter_policy_weights",
           "policy_weights_for_vllm", "start_rollout_engine"]

SYNC_MODES = ("auto", "adapter", "full")


def _sharded(model) -> str | None:
    """How the policy's weights are split over ranks, if they are (then no rank holds what vLLM needs)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed tensors shards nothing this way
        DTensor = ()
    for p in model.parameters():
        if isinstance(p, DTensor) or isinstance(getattr(p, "data", None), DTensor):
            return "trainer=fsdp"
        if hasattr(p, "ds_id"):
            return "trainer=deepspeed_zero3"
    return None


class VLLMRolloutEngine:
    """A vLLM engine that samples PPO rollouts from a copy of the policy.

    The engine starts from the policy's config and tokenizer only (``load_format=dummy``: no checkpoint is
    read) and gets its weights from ``sync``. In this process (``in_process``) a sync passes the policy's
    tensors by reference, one at a time. Worker processes (``in_process=false`` or tensor parallelism) read the
    base from safetensors shards written at start, and under ``sync=full`` from shards rewritten at every sync.

    ``rank, world, local_rank``: the data-parallel rank this engine serves. With ``world > 1`` the engine runs
    in this process with vLLM's ``external_launcher`` executor, which joins the training processes' existing
    ``torch.distributed`` group and takes the device ``local_rank`` (each rank's engine sits on its own GPU).
    """

    def __init__(self, policy, tokenizer, *, sampling: Sampling | None = None, dtype: Any = "auto",
                 gpu_memory_utilization: float = 0.3, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 enforce_eager: bool = True, in_process: bool = True, sync: str = "auto", seed: int = 0,
                 engine_kwargs: dict | None = None, rank: int = 0, world: int = 1, local_rank: int = 0):
        key = "rl.vllm"
        check_engine_settings(tensor_parallel_size, gpu_memory_utilization, max_model_len, key)
        engine_dtype = vllm_dtype(dtype, f"{key}.dtype")
        if sync not in SYNC_MODES:
            raise ConfigError(f"{key}.sync = {sync!r}; choose one of {', '.join(SYNC_MODES)}")
        vllm = import_vllm(key)
        self._vllm = vllm
        self.sampling = sampling
        self.llm = None
        if world > 1 and (tensor_parallel_size != 1 or not in_process):
            raise ConfigError(f"{key}: with trainer.devices = {world} each rank runs its own engine in its own "
                              "process; set rl.vllm.tensor_parallel_size=1 and rl.vllm.in_process=true")
        sharded = _sharded(policy)
        if sharded:
            raise ConfigError(f"rl.rollout_engine=vllm: under {sharded} no rank holds the policy's whole weights "
                              "for the engine; use trainer=ddp (LoRA or full weights) or rl.rollout_engine=hf")
        problem = adapter_sync_problem(policy)
        if sync == "adapter" and problem:
            raise ConfigError(f"{key}.sync=adapter: {problem}; set {key}.sync=auto or full")
        self.mode = "adapter" if sync != "full" and problem is None else "full"
        base = peft_base(policy)
        if engine_dtype == "auto":
            # the policy's own dtype: the engine samples what the policy would sample
            engine_dtype = str(next(base.parameters()).dtype).removeprefix("torch.")
        self._dtype = getattr(torch, engine_dtype)
        # config.json, generation_config.json and the tokenizer are all vLLM needs to build the model.
        self._dir = Path(tempfile.mkdtemp(prefix="selfdebug-vllm-policy-"))
        base.config.save_pretrained(self._dir)
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        self._by_reference = bool(in_process) and tensor_parallel_size == 1
        self._base_loaded = not self._by_reference  # worker processes load the base from the shards below
        if not self._by_reference:
            write_shards(iter_policy_weights(policy, merge_lora=self.mode == "full"), self._dir)
        kwargs = dict(engine_kwargs or {})
        if self.mode == "adapter":
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_cap(lora_config(policy)))
        if world > 1:
            # vLLM reads the rank and the device index from the environment under this executor.
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(local_rank))
            kwargs["distributed_executor_backend"] = "external_launcher"
        self._keep_world = torch.distributed.is_available() and torch.distributed.is_initialized()
        engine_env(in_process, vllm)
        try:
            self.llm = start_engine(
                vllm, key, model=str(self._dir), tokenizer=str(self._dir), dtype=engine_dtype,
                load_format="dummy" if self._by_reference else "safetensors",
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=float(gpu_memory_utilization), max_model_len=max_model_len,
                enforce_eager=bool(enforce_eager), seed=int(seed), skip_tokenizer_init=True,
                logprobs_mode="processed_logprobs",  # after temperature, as the policy re-scores them
                **kwargs)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.syncs = 0
        self.bytes_per_sync = 0  # what the last sync moved into the engine
        self.sync_seconds = 0.0
        self.lora_request = None  # the adapter the rollouts name (adapter mode, after a sync)

    # ---------------------------------------------------------------------------------------------- sync
    def _reload(self, weights: Iterable[tuple[str, Any]]) -> int:
        """Stream ``weights`` into the engine (in place); returns the bytes sent."""
        if self._by_reference:
            sent = [0]

            def counted():  # one weight (one merged LoRA layer) alive at a time
                for name, tensor in weights:
                    sent[0] += nbytes(tensor)
                    yield name, tensor

            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": counted(), "is_checkpoint_format": True})
            return sent[0]
        # Worker processes: tensors do not survive collective_rpc's serialization, so the weights go through
        # safetensors shards that every worker reloads (vLLM's reload from the model path).
        size = write_shards(weights, self._dir)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self._dir),
                                                          "is_checkpoint_format": True})
        return size

    def sync(self, policy) -> None:
        """Give the engine ``policy``'s current weights and forget KV blocks computed with the old ones.

        adapter: the frozen base once, then at every sync the adapter as a new PEFT folder and a new
        ``LoRARequest`` id (vLLM caches adapters by id); the previous adapter is dropped from the engine and disk.
        full: every weight, LoRA merged, through vLLM's in-place reload (it maps Hugging Face names onto vLLM's
        fused layers, shards them under tensor parallelism and redoes kernel repacking)."""
        t0 = time.perf_counter()
        moved = 0
        if self.mode == "full":
            moved = self._reload(iter_policy_weights(policy))
        else:
            if not self._base_loaded:
                moved += self._reload(iter_policy_weights(policy, merge_lora=False))
                self._base_loaded = True
            version = self.syncs + 1
            folder = self._dir / f"adapter-{version:06d}"
            moved += save_adapter(policy, folder, self._dtype)
            from vllm.lora.request import LoRARequest

            old, self.lora_request = self.lora_request, LoRARequest(
                lora_name=f"policy-{version}", lora_int_id=version, lora_path=str(folder))
            if old is not None:
                self.llm.llm_engine.remove_lora(old.lora_int_id)
                shutil.rmtree(old.lora_path, ignore_errors=True)
        self.llm.reset_prefix_cache()
        self.syncs += 1
        self.bytes_per_sync = moved
        self.sync_seconds = time.perf_counter() - t0

    def metrics(self) -> dict:
        """The last sync's figures for the step's metrics."""
        return {"vllm/sync_bytes": float(self.bytes_per_sync), "vllm/adapter_sync": float(self.mode == "adapter")}

    # ---------------------------------------------------------------------------------------------- sample
    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None) -> Samples:
        """One response per prompt with the engine's ``sampling``; ``seeds``: one per prompt (the module's
        ``rollout_seeds``: from the run's seed, the step and the rollout's place in the whole step, so a
        rollout is the same whichever rank samples it). Without them, seeds come from torch's RNG."""
        s = self.sampling
        if seeds is None:
            first = int(torch.randint(0, 2**31 - 1, ()).item())
            seeds = [(first + i) % (2**31 - 1) for i in range(len(prompts))]
        return Samples(self.sample(prompts, temperature=s.temperature, top_p=s.top_p,
                                   max_new_tokens=s.max_new_tokens, stop_ids=s.stop_ids, seeds=seeds))

    def sample(self, prompts: Sequence[Sequence[int]], *, temperature: float, top_p: float, max_new_tokens: int,
               stop_ids: Iterable[int], seeds: Sequence[int] | None = None, seed: int | None = None,
               return_logprobs: bool = False):
        """One sampled response per prompt: token ids, the stop token kept when one ended it (the policy learns
        to stop from it). ``seeds`` per prompt, or one ``seed`` for the call (prompt i gets ``seed + i``).
        ``return_logprobs``: also vLLM's log-prob of each sampled token at ``temperature`` (a diagnostic)."""
        from selfdebug.generation.vllm import request_seeds

        stop_ids = sorted(int(t) for t in stop_ids)
        if seeds is None:
            seeds = request_seeds(seed or 0, len(prompts), 1)
        sampling = [self._vllm.SamplingParams(
            n=1, temperature=float(temperature), top_p=float(top_p), top_k=0, max_tokens=int(max_new_tokens),
            stop_token_ids=stop_ids, detokenize=False, seed=int(s), logprobs=0 if return_logprobs else None)
            for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sampling, use_tqdm=False,
                                    lora_request=self.lora_request)
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
        shutdown_engine(llm, keep_world=getattr(self, "_keep_world", False))
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


ROLLOUT_KEYS = ("dtype", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "enforce_eager",
                "in_process", "sync", "engine_kwargs")


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
    if engine.get("sync", "auto") not in SYNC_MODES:
        raise ConfigError(f"rl.vllm.sync = {engine['sync']!r}; choose one of {', '.join(SYNC_MODES)}")
    import_vllm("rl.rollout_engine=vllm")


def check_rollout_world(world: int) -> None:
    """Any number of ranks: each data-parallel rank starts its own engine beside its training process (the
    per-rank limits, tensor_parallel_size = 1 and no sharded weights, are checked when the engines start)."""
    if int(world) < 1:
        raise ConfigError(f"trainer.devices = {world}: rl.rollout_engine=vllm needs at least one rank")


def start_rollout_engine(settings, policy, tokenizer, sampling: Sampling, seed: int, owner=None) -> VLLMRolloutEngine:
    """The engine for ``rl.vllm`` on ``owner``'s rank; its KV cache is sized for the longest sequence a rollout
    makes (``rl.max_prompt_length + rl.max_new_tokens``) unless ``rl.vllm.max_model_len`` says otherwise."""
    from selfdebug.train.distributed import rank_world

    kwargs = dict(settings.vllm)
    if kwargs.get("max_model_len") is None:
        kwargs["max_model_len"] = settings.max_prompt_length + settings.max_new_tokens
    rank, world = rank_world(owner) if owner is not None else (0, 1)
    trainer = getattr(owner, "_trainer", None)
    local_rank = int(getattr(trainer, "local_rank", rank)) if trainer is not None else 0
    return VLLMRolloutEngine(policy, tokenizer, sampling=sampling, seed=seed, rank=rank, world=world,
                             local_rank=local_rank, **kwargs)
