"""The transformers rollout engine (``rl.rollout_engine=hf``): the policy samples with its own ``generate`` in
the training process, so there is no copy and ``sync`` has nothing to do."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from selfdebug.train.distributed import generate_kwargs
from selfdebug.train.rl.engines.base import Samples, Sampling
from selfdebug.train.rl.tokens import left_pad


class HFRolloutEngine:
    """``policy.generate`` with ``sampling``. ``keep_logprobs`` (``rl.rollout_logprobs=generation``): also the
    log-prob and value of each sampled token as sampling computed them; the last hidden state is read off the
    input of the output layer. ``owner``: the LightningModule whose device and strategy generation follows."""

    def __init__(self, policy, value_head, sampling: Sampling, pad_id: int, *, keep_logprobs: bool, owner):
        self.policy, self.value_head, self.sampling, self.pad_id = policy, value_head, sampling, pad_id
        self.keep_logprobs, self.owner = keep_logprobs, owner

    def sync(self, policy) -> None:
        """Nothing to send: the engine samples the policy itself."""

    def metrics(self) -> dict:
        return {}

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None) -> Samples:
        """``seeds`` are not used: ``generate`` samples the whole batch from torch's RNG, which the PPO step
        seeds per step and rank."""
        s, keep, device = self.sampling, self.keep_logprobs, self.owner.device
        query, query_mask = left_pad(prompts, self.pad_id)
        hidden: list[torch.Tensor] = []
        hook = (self.policy.get_output_embeddings().register_forward_pre_hook(
            lambda module, args: hidden.append(args[0][:, -1])) if keep else None)
        self.policy.eval()
        try:
            out = self.policy.generate(
                input_ids=query.to(device), attention_mask=query_mask.to(device), do_sample=True,
                temperature=s.temperature, top_p=s.top_p, top_k=0, max_new_tokens=s.max_new_tokens,
                eos_token_id=list(s.stop_ids) or None, pad_token_id=self.pad_id, use_cache=True,
                return_dict_in_generate=True, output_logits=keep, **generate_kwargs(self.owner, self.policy))
        finally:
            self.policy.train()
            if hook is not None:
                hook.remove()
        new = out.sequences[:, query.shape[1]:]
        if not keep:
            return Samples(new.tolist())
        logits = torch.stack(out.logits, dim=1).float() / s.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        values = self.value_head(torch.stack(hidden[: new.shape[1]], dim=1)).float()
        return Samples(new.tolist(), logprobs, values)

    def close(self) -> None:
        """Nothing held beyond the policy."""
