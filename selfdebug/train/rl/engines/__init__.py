"""Rollout engines: what samples the PPO rollouts (``rl.rollout_engine``): ``hf`` (the policy's own
``generate``) or ``vllm`` (a vLLM copy of the policy, synced every step: the LoRA adapter, or every weight). See ``base`` for the interface."""

from __future__ import annotations

from selfdebug.train.rl.engines.base import RolloutEngine, Samples, Sampling, rollout_rows, rollout_seeds
from selfdebug.train.rl.engines.hf import HFRolloutEngine
from selfdebug.train.rl.engines.vllm import VLLMRolloutEngine, start_rollout_engine

__all__ = ["HFRolloutEngine", "RolloutEngine", "Samples", "Sampling", "VLLMRolloutEngine", "rollout_rows",
           "rollout_seeds", "start_engine"]


def start_engine(settings, policy, value_head, tokenizer, *, stop_ids, pad_id: int, seed: int, owner):
    """The engine ``settings.rollout_engine`` names; None offline (the teacher's answers are the responses)."""
    if settings.offline:
        return None
    sampling = Sampling(settings.temperature, settings.top_p, settings.max_new_tokens, tuple(sorted(stop_ids)))
    if settings.rollout_engine == "vllm":
        return start_rollout_engine(settings, policy, tokenizer, sampling, seed, owner=owner)
    return HFRolloutEngine(policy, value_head, sampling, pad_id,
                           keep_logprobs=settings.rollout_logprobs == "generation", owner=owner)
