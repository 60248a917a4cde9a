"""The model pieces of PPO: the value head on the policy's last hidden state, and the per-token log-probs,
values and entropies of responses under a model."""

from __future__ import annotations

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.train.rl.ppo_math import entropy_from_logits


class ValueHead(torch.nn.Module):
    """V(s_t): a linear map of the policy's last hidden state at the position that emits token t."""

    def __init__(self, hidden_size: int, init_std: float = 0.0):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.linear.weight, std=init_std) if init_std > 0 else torch.nn.init.zeros_(
            self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def hidden_size_of(model) -> int:
    config = model.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ConfigError(f"cannot find the hidden size of {type(model).__name__} for the value head")


def response_scores(model, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor,
                    response_mask: torch.Tensor, temperature: float, value_head: ValueHead | None = None,
                    with_entropy: bool = False, detach_value: bool = False, entropy_grad: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per response token: log-prob under ``model`` (at the sampling temperature), value, entropy.

    ``query`` is left-padded and ``response`` right-padded, so every response starts at the same column and
    positions come from the attention mask (as in generation). Logits are computed for the response only.
    """
    input_ids = torch.cat([query, response], dim=1)
    attention = torch.cat([query_mask, response_mask], dim=1)
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    n = response.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=n + 1,
                output_hidden_states=value_head is not None, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, -n - 1:-1]
        values = value_head(hidden.detach() if detach_value else hidden)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    return logprobs, values, entropy


def disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
