"""PPO on explanation + refinement with the span-level composite reward, as a LightningModule.

One Lightning batch is one PPO iteration, read top to bottom in ``PPOModule.training_step``:

1. **rollout**   the policy samples an explanation and a refinement for each wrong program of the batch
                 (``offline``: the teacher's collected answers are the responses instead); each finished
                 chunk of generations goes to the sandbox at once, so judging overlaps the next chunk;
2. **judge**     wait for the sandbox verdicts that are still out;
3. **reward**    ``CompositeReward.score``: R_code (CodeBLEU + unit tests) and R_expl (embedding similarity);
4. **evaluate**  log-probs of the responses under the policy (old) and the reference (the SFT model: the
                 same weights with the LoRA adapters disabled, or a frozen copy), values from the value head;
5. **advantage** per-token rewards: R_expl on the explanation's last token, R_code on the final token,
                 -kl_coef * KL_t everywhere (``reward.placement=sequence``: both on the final token); then
                 GAE(gamma, lambda) and whitening;
6. **update**    ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss, clipped value loss,
                 optional entropy bonus, gradient clipping, one optimizer step per minibatch; stop early
                 when the approximate KL to the rollout policy passes ``target_kl``;
7. the KL controller adapts, and every figure goes to metrics.jsonl / W&B.

The math lives in ``selfdebug.train.rl.ppo_math`` (pure functions, tested by hand) and ``selfdebug.rewards``.
Every trick is a named field of ``PPOSettings`` with a one-line comment. Randomness is re-seeded from
``(seed, step)`` at the start of every step, and checkpoints hold the policy, the value head, the optimizer,
the KL controller, the RNG and the data position, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.train.data import answer_text, record_problem
from selfdebug.train.distributed import (
    across_ranks,
    backward_sync,
    clip_grad_norm,
    generate_kwargs,
    global_mean,
    rank_world,
    reduce_metrics,
    shard_modules,
    sum_across_ranks,
)
from selfdebug.train.rl.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from selfdebug.train.sft.module import make_optimizer, save_step_checkpoint, stop_token_ids, trainable_parameters
from selfdebug.problems import Problem
from selfdebug.core.prompts import (
    END,
    MODES,
    ParsedCompletion,
    assemble_program,
    parse_completion,
    refine_messages,
    render_chat,
)
from selfdebug.rewards import RewardSample, place_rewards_batch

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ settings

@dataclass
class PPOSettings:
    """The ``rl`` config block (conf/rl/default.yaml), checked before anything is loaded."""

    # --- what to train on
    mode: str = "explain_refine"  # explain_refine: explanation then code (R_expl + R_code); refine: code only
    offline: bool = False  # score the teacher's collected answers instead of sampling the policy
    sft_checkpoint: str | None = None  # the SFT model to start from and to stay near; null: model.name_or_path
    max_prompt_length: int = 1536  # prompts longer than this are left out (counted)
    # --- rollouts
    batch_size: int = 64  # rollouts per PPO step (paper: 64)
    samples_per_prompt: int = 1  # responses per wrong program in a step
    generation_batch_size: int = 16  # rollouts generated at once; each chunk is judged while the next generates
    max_new_tokens: int = 512  # response length cap (a cut response is judged as is)
    temperature: float = 1.0  # sampling temperature; log-probs are computed at the same temperature
    top_p: float = 1.0
    judge_timeout: float | None = None  # seconds per program; null: sandbox.timeout
    code_from: str = "fenced"  # fenced: the last ```python block of the answer; raw: the whole answer is code
    rollout_logprobs: str = "recompute"  # recompute: old log-probs and values from a forward pass after sampling
    #                                      (exact); generation: kept from sampling itself (one pass fewer; under
    #                                      bf16 the cached decoding differs slightly, so the first ratio is ~1)
    rollout_engine: str = "hf"  # hf: policy.generate; vllm: a vLLM copy of the policy, weights synced every step
    vllm: dict = field(default_factory=dict)  # rollout_engine=vllm: engine settings (selfdebug/vllm_backend.py)
    # --- optimisation
    total_steps: int = 200  # PPO steps of the run
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps; resume continues
    lr: float = 2.0e-6  # AdamW, constant (paper: 2e-6)
    value_lr: float | None = None  # the value head's own lr (a fresh linear head learns slowly at 2e-6); null: lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    ppo_epochs: int = 4  # passes over the rollouts per step
    mini_batch_size: int = 16  # rollouts per optimizer step
    micro_batch_size: int = 4  # rollouts per forward/backward (gradient accumulation inside a minibatch)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; null: measure only
    # --- the PPO tricks
    gamma: float = 0.99  # discount (paper: 0.99)
    lam: float = 0.95  # GAE lambda
    clip_range: float = 0.2  # policy ratio clipping
    clip_range_value: float | None = 0.2  # value clipping around the rollout values; null: plain squared error
    vf_coef: float = 0.1  # value loss weight
    ent_coef: float = 0.0  # entropy bonus weight (0: entropy is only logged)
    whiten_advantages: bool = True  # unit variance advantages over the batch's tokens
    whiten_shift_mean: bool = True  # ... and zero mean (TRL); false keeps their sign (a batch that all passed
    #                                 is then not half "bad": only the scale changes)
    whiten_rewards: bool = False  # whiten the per-token rewards (KL included) before GAE
    target_kl: float | None = None  # stop the epochs once the approximate KL to the rollout policy exceeds it
    kl_estimator: str = "k1"  # per-token KL to the reference: k1 (log ratio), abs, k2, k3
    kl_control: str = "adaptive"  # fixed: reward.kl_coef throughout; adaptive: steer towards kl_target
    kl_target: float = 6.0  # adaptive control: target KL per sequence (TRL's default)
    kl_horizon: int = 10000  # adaptive control: horizon in rollouts (TRL's default)
    disable_dropout: bool = True  # dropout off, so the first epoch's ratio is exactly 1
    value_head_std: float = 0.0  # init std of the value head's weights (0: zeros, a flat first critic)
    detach_value_head: bool = False  # the value loss trains the head only, not the policy's trunk (TRL: shared)
    # --- memory and precision
    dtype: str = "auto"  # weights: auto = fp32 for full weights, bf16 base under LoRA on a bf16 GPU
    gradient_checkpointing: bool = False
    # --- bookkeeping
    checkpoint_every: int = 10  # Lightning checkpoint every N steps (and at the last step); 0: last only
    keep_checkpoints: int = 2
    table_every: int = 10  # sampled rollouts to rollouts.jsonl and a W&B table every N steps; 0: never
    table_rows: int = 8
    summary_window: int = 5  # summary.json's final/* figures average the last N steps

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        ints_pos = ("batch_size", "samples_per_prompt", "generation_batch_size", "max_new_tokens", "total_steps",
                    "ppo_epochs", "mini_batch_size", "micro_batch_size", "max_prompt_length", "keep_checkpoints",
                    "kl_horizon", "summary_window")
        for key in ints_pos:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"rl.{key} = {value!r}; it must be an integer >= 1")
        for key in ("checkpoint_every", "table_every", "table_rows"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"rl.{key} = {getattr(self, key)!r}; it must be >= 0")
        if self.stop_after is not None and int(self.stop_after) < 1:
            raise ConfigError(f"rl.stop_after = {self.stop_after}; it must be >= 1 or null")
        if self.mode not in MODES:
            raise ConfigError(f"rl.mode = {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.batch_size % self.samples_per_prompt:
            raise ConfigError(f"rl.batch_size = {self.batch_size} is not a multiple of rl.samples_per_prompt = "
                              f"{self.samples_per_prompt}")
        if self.offline and self.samples_per_prompt != 1:
            raise ConfigError("rl.offline = true scores each collected answer once; set rl.samples_per_prompt=1")
        if self.batch_size % self.mini_batch_size or self.mini_batch_size % self.micro_batch_size:
            raise ConfigError(f"rl.batch_size = {self.batch_size}, rl.mini_batch_size = {self.mini_batch_size}, "
                              f"rl.micro_batch_size = {self.micro_batch_size}: each must divide the one before")
        for key, low, high in (("gamma", 0.0, 1.0), ("lam", 0.0, 1.0), ("top_p", 1e-6, 1.0)):
            value = getattr(self, key)
            if not low <= float(value) <= high:
                raise ConfigError(f"rl.{key} = {value}; it must be in [{low}, {high}]")
        for key in ("lr", "temperature", "clip_range", "kl_target"):
            if not float(getattr(self, key)) > 0:
                raise ConfigError(f"rl.{key} = {getattr(self, key)}; it must be > 0")
        for key in ("clip_range_value", "target_kl", "max_grad_norm", "judge_timeout", "value_lr"):
            value = getattr(self, key)
            if value is not None and not float(value) > 0:
                raise ConfigError(f"rl.{key} = {value}; it must be > 0 or null")
        for key in ("vf_coef", "ent_coef", "weight_decay", "value_head_std"):
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"rl.{key} = {getattr(self, key)}; it must be >= 0")
        if self.kl_estimator not in ("k1", "abs", "k2", "k3"):
            raise ConfigError(f"rl.kl_estimator = {self.kl_estimator!r}; choose k1, abs, k2 or k3")
        if self.kl_control not in ("fixed", "adaptive"):
            raise ConfigError(f"rl.kl_control = {self.kl_control!r}; choose fixed or adaptive")
        if self.code_from not in ("fenced", "raw"):
            raise ConfigError(f"rl.code_from = {self.code_from!r}; choose fenced or raw")
        if self.code_from == "raw" and self.mode != "refine":
            raise ConfigError("rl.code_from = raw reads the whole answer as code, so there is no explanation to "
                              "reward; use it with rl.mode=refine")
        if self.rollout_logprobs not in ("recompute", "generation"):
            raise ConfigError(f"rl.rollout_logprobs = {self.rollout_logprobs!r}; choose recompute or generation")
        if self.rollout_engine not in ("hf", "vllm"):
            raise ConfigError(f"rl.rollout_engine = {self.rollout_engine!r}; choose hf or vllm")
        if self.rollout_engine == "vllm":
            from selfdebug.generation.vllm import check_rollout_settings

            check_rollout_settings(self)

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.samples_per_prompt

    @classmethod
    def from_dict(cls, values: dict) -> PPOSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"rl.{unknown[0]}: no such PPO setting (see selfdebug/lit/ppo.py:PPOSettings)")
        return cls(**values)


# ------------------------------------------------------------------------------------------------ data

@dataclass
class RLItem:
    """One prompt of the RL data: a wrong program with its feedback (and, offline, the teacher's answer)."""

    wrong_id: str
    problem: Problem
    prompt_ids: list[int]
    where: str
    answer: str | None = None  # offline: the teacher's answer text (explanation, then a fenced block)
    explained: bool = True  # offline: the answer carries an explanation (refine-only records do not)


def build_items(trajectories: list[tuple[str, dict]], tokenizer, mode: str, offline: bool,
                max_prompt_length: int) -> tuple[list[RLItem], dict]:
    """The RL prompts from collected ``(where, record)`` trajectories.

    Online: one item per distinct wrong program (``wrong_id``), in the order they first appear. Offline: one
    item per distinct collected answer (correct and wrong verdicts alike). Prompts are rendered exactly as
    evaluation renders them; ones over ``max_prompt_length`` tokens are left out and counted.
    """
    chosen: list[tuple[str, dict]] = []
    seen: set = set()
    for where, rec in trajectories:
        key = (rec["wrong_id"], rec["explanation"], rec["refinement"]) if offline else rec["wrong_id"]
        if key not in seen:
            seen.add(key)
            chosen.append((where, rec))
    add_special = not getattr(tokenizer, "chat_template", None)
    texts = [render_chat(refine_messages(record_problem(rec, where), rec["wrong_code"], rec["feedback"], mode),
                         tokenizer, add_generation_prompt=True) for where, rec in chosen]
    ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"] if texts else []
    items, too_long = [], 0
    for (where, rec), prompt_ids in zip(chosen, ids):
        if len(prompt_ids) > max_prompt_length:
            too_long += 1
            continue
        answer, explained = None, True
        if offline:
            explained = mode == "explain_refine" and bool(rec["explanation"].strip())
            answer = answer_text(rec["refinement"], rec["explanation"] if explained else None)
        items.append(RLItem(str(rec["wrong_id"]), record_problem(rec, where), list(prompt_ids), where, answer,
                            explained))
    return items, {"rl_items": len(items), "rl_prompts_too_long": too_long,
                   "wrong_programs": len({rec["wrong_id"] for _, rec in trajectories})}


class PromptStream:
    """The training stream: item ``s`` holds the item indices of PPO step ``s``.

    The items are visited in seeded random order, epoch after epoch, ``per_step`` at a time (an epoch's tail
    continues into the next epoch's order). Resumable like ``selfdebug.train.data.StepBatches``: Lightning saves
    ``state_dict`` with its checkpoints and calls ``load_state_dict`` on resume.
    """

    def __init__(self, n_items: int, per_step: int, total_steps: int, seed: int = 0):
        self.n_items, self.per_step, self.total_steps, self.seed = int(n_items), int(per_step), int(total_steps), int(seed)
        self._start = self._next = 0

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self):
        start, self._start = self._start, 0
        for step in range(start, self.total_steps):
            self._next = step + 1
            yield torch.tensor(self.step_items(step), dtype=torch.long)

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_items, generator=g).tolist()

    def step_items(self, step: int) -> list[int]:
        first = step * self.per_step
        out = []
        for k in range(first, first + self.per_step):
            epoch, index = divmod(k, self.n_items)
            out.append(self._order(epoch)[index])
        return out

    def state_dict(self) -> dict:
        return {"next_step": self._next, "n_items": self.n_items, "per_step": self.per_step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n_items": self.n_items, "per_step": self.per_step, "seed": self.seed}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ConfigError(f"the checkpoint was written for another prompt stream ({theirs}); this run has "
                              f"{mine}. Resume with the same dataset, seed and rl.batch_size, or start a new run dir")
        self._start = self._next = int(state["next_step"])


# ------------------------------------------------------------------------------------------------ text <-> tokens

def char_to_token(tokenizer, ids: Sequence[int], char_index: int) -> int:
    """Index of the token whose decoded text covers character ``char_index`` of ``decode(ids)``: the first
    ``k`` with ``len(decode(ids[:k + 1])) > char_index`` (binary search; clamped to the last token)."""
    lo, hi = 0, len(ids) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid + 1], skip_special_tokens=True)) > char_index:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class Response:
    """One response: its tokens (stop token included when one was emitted) and what they say."""

    ids: list[int]
    text: str
    explanation: str | None  # None: refine-only (no explanation to reward)
    explanation_end: int | None  # token index of the explanation's last token; None: none written
    code: str | None
    truncated: bool


def read_response(tokenizer, ids: Sequence[int], stop_ids: set[int], stop_strings: Sequence[str],
                  explained: bool, raw_code: bool = False) -> Response:
    """Cut generated ``ids`` at the first stop token (kept: the policy learns to stop) or at the end of the
    first stop string, then parse it into explanation and code and find the explanation's last token.
    ``raw_code``: the whole text is the program (no fence, no explanation)."""
    ids = list(ids)
    end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
    truncated = end is None
    if end is not None:
        ids = ids[:end + 1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [(text.find(s), s) for s in stop_strings if s and text.find(s) != -1]
    if cuts:
        at, s = min(cuts)
        last = char_to_token(tokenizer, ids, at + len(s) - 1)
        ids, text, truncated = ids[:last + 1], text[:at], False
    parsed = parse_completion(text)
    if raw_code:
        parsed = ParsedCompletion(explanation="", code=text.rstrip() + "\n" if text.strip() else None)
    explanation, explanation_end = None, None
    if explained:
        explanation = parsed.explanation  # "" when none was written (it scores S_ex = 0)
        if explanation:
            # parse_completion returns text[:start].strip(): the explanation begins after the leading blanks.
            stop_char = (len(text) - len(text.lstrip())) + len(explanation)
            explanation_end = char_to_token(tokenizer, ids, stop_char - 1)
    if not ids:  # the model stopped at once: keep one token to carry the reward
        ids = [min(stop_ids)] if stop_ids else [tokenizer.eos_token_id]
    return Response(ids, text, explanation, explanation_end, parsed.code, truncated)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


# ------------------------------------------------------------------------------------------------ model pieces

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
                    with_entropy: bool = False, detach_value: bool = False, entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
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


# ------------------------------------------------------------------------------------------------ rollouts

@dataclass
class Rollouts:
    """A step's batch: B prompt + response rows and what the update needs about each."""

    items: list[RLItem]
    query: torch.Tensor  # [B, P] left-padded
    query_mask: torch.Tensor
    response: torch.Tensor  # [B, R] right-padded
    response_mask: torch.Tensor
    responses: list[Response]
    programs: list[str | None]
    results: list = field(default_factory=list)  # ExecResult per row
    sampled_logprobs: torch.Tensor | None = None  # [B, R] from sampling (rl.rollout_logprobs=generation)
    sampled_values: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)

    def rows(self, index: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """The rows ``index`` cut to their own longest prompt and response (less padding per micro-batch)."""
        index = torch.as_tensor(index, dtype=torch.long)
        q_mask, r_mask = self.query_mask[index], self.response_mask[index]
        p = int(q_mask.sum(1).max())
        r = int(r_mask.sum(1).max())
        return self.query[index, -p:], q_mask[:, -p:], self.response[index, :r], r_mask[:, :r]


def micro_batches(index: Sequence[int], lengths: torch.Tensor, size: int) -> list[list[int]]:
    """``index`` cut into micro-batches of ``size``, longest responses first (similar lengths share one)."""
    ordered = sorted(index, key=lambda i: (-int(lengths[i]), i))
    return [ordered[k:k + size] for k in range(0, len(ordered), size)]


# ------------------------------------------------------------------------------------------------ the module

class PPOModule(pl.LightningModule):
    """Manual optimization: one Lightning batch (a tensor of item indices) = one PPO step."""

    def __init__(self, policy, tokenizer, reward, sandbox, items: list[RLItem], settings: PPOSettings, *,
                 seed: int = 0, lora: bool = False, run_logger=None, run_dir: Path | None = None):
        super().__init__()
        s = self.settings = settings
        self.policy = policy
        self.tokenizer = tokenizer
        self.value_head = ValueHead(hidden_size_of(policy), s.value_head_std)
        self.reward, self.sandbox, self.items = reward, sandbox, items
        self.seed, self.lora, self.run_logger = int(seed), bool(lora), run_logger
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.automatic_optimization = False
        # LoRA: checkpoints hold only the trainable weights (the frozen base is reloaded from its source).
        self.strict_loading = not self.lora
        if s.disable_dropout:
            disable_dropout(policy)

        # The reference policy is the SFT model. With LoRA it is the policy with its adapters disabled (no
        # second copy); otherwise a frozen copy, kept out of the state dict (a list hides it from nn.Module).
        kl_coef = float(reward.kl_coef)
        self.use_reference = not (s.kl_control == "fixed" and kl_coef == 0.0)
        self._reference: list = []
        if self.use_reference and not self.lora:
            ref = copy.deepcopy(policy).eval()
            ref.requires_grad_(False)
            self._reference.append(ref)
        self.kl_ctl = (AdaptiveKLController(kl_coef, s.kl_target, s.kl_horizon) if s.kl_control == "adaptive"
                       else FixedKLController(kl_coef))

        self.stop_ids = set(stop_token_ids(tokenizer, policy))
        self.stop_strings = (END,)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.ppo_step = 0  # PPO steps done (Lightning's global_step counts optimizer steps: several per PPO step)
        self.history: list[dict] = []  # every step's metrics (summary.json averages the last few)
        self._sandbox_before = dict(sandbox.stats()) if sandbox is not None else {}

    # -------------------------------------------------------------------------------------------- setup
    def configure_model(self) -> None:
        # trainer=fsdp: FSDP2 units for the policy, its reference copy and the value head (else nothing)
        shard_modules(self, [*self._reference, self.policy, self.value_head])

    def configure_optimizers(self):
        s = self.settings
        opt = make_optimizer(self.policy, s.lr, s.weight_decay, s.betas, s.eps)  # the policy (or its LoRA)
        opt.add_param_group({"params": list(self.value_head.parameters()), "weight_decay": 0.0,
                             "lr": s.value_lr if s.value_lr is not None else s.lr})
        return opt

    def on_fit_start(self) -> None:
        for ref in self._reference:
            ref.to(self.device)

    def teardown(self, stage: str) -> None:
        if self.settings.rollout_engine == "vllm":  # free the engine's memory (KV cache, weight copy)
            from selfdebug.generation.vllm import close_rollout_engine

            close_rollout_engine(self)

    def on_train_batch_start(self, batch, batch_idx: int):
        if self.settings.stop_after is not None and self.ppo_step >= self.settings.stop_after:
            return -1  # resumed at or past rl.stop_after: nothing to do (Lightning ends the epoch)
        return None

    def reference_forward(self, *args, **kwargs):
        """Log-probs under the SFT model."""
        if self.lora:
            with self.policy.disable_adapter():
                return response_scores(self.policy, *args, **kwargs)
        return response_scores(self._reference[0], *args, **kwargs)

    # -------------------------------------------------------------------------------------------- the step
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict:
        s = self.settings
        step = self.ppo_step
        rank, world = rank_world(self)
        seed_step(self.seed, step, rank)  # one seed per step and rank: a resumed run samples as an uninterrupted one
        # Data parallel: each rank takes every world-th prompt of the step; whitening, the KL controller and
        # the logged figures are computed over all ranks below.
        items = [self.items[int(i)] for i in batch.tolist()[rank::world] for _ in range(s.samples_per_prompt)]
        times = {}

        # 1-2. rollout, with judging overlapped, then wait for the verdicts still out
        t0 = time.perf_counter()
        rollouts, futures = self.rollout(items)
        t1 = time.perf_counter()
        rollouts.results = [f.result() for f in futures]
        t2 = time.perf_counter()
        times["generate"], times["judge"] = t1 - t0, t2 - t1

        # 3. reward: the composite score of every rollout (R_code, R_expl and their parts)
        samples = [RewardSample(item.wrong_id, program or "", result, response.explanation)
                   for item, program, result, response in zip(items, rollouts.programs, rollouts.results,
                                                               rollouts.responses)]
        scored = self.reward.score(samples)
        t3 = time.perf_counter()
        times["reward"] = t3 - t2

        # 4. evaluate: old log-probs and values of the policy, log-probs of the reference
        old_logprobs, old_values, ref_logprobs = self.evaluate(rollouts)
        mask = rollouts.response_mask.to(self.device).float()
        t4 = time.perf_counter()
        times["evaluate"] = t4 - t3

        # 5. per-token rewards (span placement + KL penalty), GAE, whitening
        kl = kl_estimate(old_logprobs, ref_logprobs, s.kl_estimator) * mask
        ends = [r.explanation_end for r in rollouts.responses]
        rewards = place_rewards_batch(rollouts.lengths.to(self.device), ends, scored.r_expl, scored.r_code, kl=kl,
                                      kl_coef=self.kl_ctl.value, placement=self.reward.placement)
        if s.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False, all_reduce=across_ranks())
        advantages, returns = gae(rewards, old_values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = masked_whiten(advantages, mask, shift_mean=s.whiten_shift_mean, all_reduce=across_ranks())

        # 6. update: epochs of clipped PPO over shuffled minibatches
        update = self.update(rollouts, old_logprobs, old_values, advantages, returns, step)
        t5 = time.perf_counter()
        times["update"] = t5 - t4

        # 7. KL control, metrics
        kl_per_sequence, n_rollouts = global_mean((kl * mask).sum(1))  # over all ranks: one controller state
        kl_coef = self.kl_ctl.value
        self.kl_ctl.update(kl_per_sequence, n_rollouts)
        metrics = reduce_metrics(self.step_metrics(rollouts, scored, kl, mask, rewards, old_values, returns,
                                                   advantages, update, kl_per_sequence, kl_coef, times))
        self.ppo_step += 1
        self.history.append(metrics)
        if self.run_logger is not None:
            self.run_logger.log(metrics, step=self.ppo_step)
            if s.table_every and (self.ppo_step % s.table_every == 0 or self.ppo_step == 1):
                self.log_rollouts(rollouts, scored)
        self.log("reward", metrics["reward/total"], prog_bar=True, logger=False, batch_size=len(rollouts))
        self.log("pass", metrics["rollout/pass_rate"], prog_bar=True, logger=False, batch_size=len(rollouts))
        return metrics

    # -------------------------------------------------------------------------------------------- 1. rollout
    def rollout(self, items: list[RLItem]) -> tuple[Rollouts, list]:
        """Responses for ``items`` and a sandbox future per response (submitted as each chunk finishes)."""
        s = self.settings
        responses: list[Response] = []
        programs: list[str | None] = []
        futures = []
        sampled: list[tuple[torch.Tensor, torch.Tensor]] = []  # (log-probs, values) per row, when kept
        chunk = len(items) if s.offline else s.generation_batch_size
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            if s.offline:
                generated, logprobs, values = self.teacher_answers(part), None, None
            else:
                generated, logprobs, values = self.generate([it.prompt_ids for it in part])
            for row, (item, ids) in enumerate(zip(part, generated)):
                explained = item.explained if s.offline else s.mode == "explain_refine"
                response = read_response(self.tokenizer, ids, self.stop_ids, self.stop_strings, explained,
                                         raw_code=s.code_from == "raw")
                program = assemble_program(item.problem, response.code) if response.code is not None else None
                responses.append(response)
                programs.append(program)
                futures.append(self.sandbox.submit(program, item.problem.tests, s.judge_timeout))
                if logprobs is not None:
                    n = len(response.ids)
                    sampled.append((logprobs[row, :n], values[row, :n]))
        query, query_mask = left_pad([it.prompt_ids for it in items], self.pad_id)
        response, response_mask = right_pad([r.ids for r in responses], self.pad_id)
        rollouts = Rollouts(items, query, query_mask, response, response_mask, responses, programs)
        if sampled:
            rollouts.sampled_logprobs = torch.nn.utils.rnn.pad_sequence([lp for lp, _ in sampled], batch_first=True)
            rollouts.sampled_values = torch.nn.utils.rnn.pad_sequence([v for _, v in sampled], batch_first=True)
        return rollouts, futures

    @torch.no_grad()
    def generate(self, prompts: list[list[int]]):
        """Sampled response ids per prompt; with ``rollout_logprobs=generation`` also each token's log-prob and
        value as sampling computed them (the last hidden state is read off the input of the output layer)."""
        s = self.settings
        if s.rollout_engine == "vllm":  # sampled by vLLM; the policy re-scores them in evaluate()
            from selfdebug.generation.vllm import vllm_rollout

            return vllm_rollout(self, prompts), None, None
        keep = s.rollout_logprobs == "generation"
        query, query_mask = left_pad(prompts, self.pad_id)
        hidden: list[torch.Tensor] = []
        hook = (self.policy.get_output_embeddings().register_forward_pre_hook(
            lambda module, args: hidden.append(args[0][:, -1])) if keep else None)
        self.policy.eval()
        try:
            out = self.policy.generate(
                input_ids=query.to(self.device), attention_mask=query_mask.to(self.device), do_sample=True,
                temperature=s.temperature, top_p=s.top_p, top_k=0, max_new_tokens=s.max_new_tokens,
                eos_token_id=sorted(self.stop_ids) or None, pad_token_id=self.pad_id, use_cache=True,
                return_dict_in_generate=True, output_logits=keep, **generate_kwargs(self))
        finally:
            self.policy.train()
            if hook is not None:
                hook.remove()
        new = out.sequences[:, query.shape[1]:]
        if not keep:
            return new.tolist(), None, None
        logits = torch.stack(out.logits, dim=1).float() / s.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        values = self.value_head(torch.stack(hidden[: new.shape[1]], dim=1)).float()
        return new.tolist(), logprobs, values

    def teacher_answers(self, items: list[RLItem]) -> list[list[int]]:
        """Offline: the collected answer of each item as response tokens, ended by the stop token (whole:
        ``rl.max_new_tokens`` bounds sampling only)."""
        end_of_turn = self.tokenizer.encode(END, add_special_tokens=False)  # as the SFT targets end
        end = end_of_turn if len(end_of_turn) == 1 else ([min(self.stop_ids)] if self.stop_ids else [])
        encoded = self.tokenizer([it.answer for it in items], add_special_tokens=False)["input_ids"]
        return [list(ids) + end for ids in encoded]

    # -------------------------------------------------------------------------------------------- 4. evaluate
    @torch.no_grad()
    def evaluate(self, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(old_logprobs, old_values, ref_logprobs)``, each ``[B, R]`` and zero on padding."""
        s = self.settings
        shape = tuple(rollouts.response.shape)
        old_logprobs = torch.zeros(shape, device=self.device)
        old_values = torch.zeros(shape, device=self.device)
        ref_logprobs = torch.zeros(shape, device=self.device)
        sampled = rollouts.sampled_logprobs is not None  # rl.rollout_logprobs=generation: no policy pass here
        if sampled:
            n = rollouts.sampled_logprobs.shape[1]
            mask = rollouts.response_mask[:, :n].to(self.device)
            old_logprobs[:, :n] = rollouts.sampled_logprobs.to(self.device) * mask
            old_values[:, :n] = rollouts.sampled_values.to(self.device) * mask
        for rows in micro_batches(range(len(rollouts)), rollouts.lengths, s.micro_batch_size):
            q, qm, r, rm = (t.to(self.device) for t in rollouts.rows(rows))
            n = r.shape[1]
            if not sampled:
                logprobs, values, _ = response_scores(self.policy, q, qm, r, rm, s.temperature, self.value_head)
                old_logprobs[rows, :n] = logprobs * rm
                old_values[rows, :n] = values.float() * rm
            if self.use_reference:
                ref, _, _ = self.reference_forward(q, qm, r, rm, s.temperature)
                ref_logprobs[rows, :n] = ref * rm
            else:
                ref_logprobs[rows, :n] = old_logprobs[rows, :n]  # no KL term: the reference is never needed
        return old_logprobs, old_values, ref_logprobs

    # -------------------------------------------------------------------------------------------- 6. update
    def update(self, rollouts: Rollouts, old_logprobs, old_values, advantages, returns, step: int) -> dict:
        s = self.settings
        opt = self.optimizers()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        lengths = rollouts.lengths
        sums: dict[str, float] = {}
        updates, early_stop = 0, False
        # Data parallel: rl.mini_batch_size is global, each rank updates on its share of it; the ranks' orders
        # have the same shape, so every rank takes the same number of optimizer steps.
        _, world = rank_world(self)
        mini = s.mini_batch_size // world
        for epoch in range(s.ppo_epochs):
            order = torch.randperm(len(rollouts), generator=generator).tolist()
            for start in range(0, len(order), mini):
                minibatch = order[start:start + mini]
                n_tokens = float(lengths[minibatch].sum())
                if world > 1:  # the token-mean is over the global minibatch
                    n_tokens = float(sum_across_ranks(torch.tensor(n_tokens, dtype=torch.float64,
                                                                   device=self.device)))
                stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clipfrac": 0.0, "approx_kl": 0.0,
                         "vf_clipfrac": 0.0, "ratio": 0.0}
                chunks = micro_batches(minibatch, lengths, s.micro_batch_size)
                for k, rows in enumerate(chunks):
                    q, qm, r, rm = (t.to(self.device) for t in rollouts.rows(rows))
                    n, mask = r.shape[1], rm.float()
                    new_logprobs, new_values, entropy = response_scores(
                        self.policy, q, qm, r, rm, s.temperature, self.value_head, with_entropy=True,
                        detach_value=s.detach_value_head, entropy_grad=s.ent_coef > 0)
                    pg_loss, pg_stats = policy_loss(new_logprobs, old_logprobs[rows, :n], advantages[rows, :n],
                                                    mask, s.clip_range)
                    vf_loss, vf_stats = value_loss(new_values.float(), old_values[rows, :n], returns[rows, :n], mask,
                                                   s.clip_range_value)
                    ent = masked_mean(entropy, mask)
                    weight = float(mask.sum()) / n_tokens  # token-mean over the whole minibatch
                    loss = pg_loss + s.vf_coef * vf_loss - (s.ent_coef * ent if s.ent_coef else 0.0)
                    with backward_sync(self, k == len(chunks) - 1):  # DDP reduces once, after the last
                        self.manual_backward(loss * weight * world)  # the backend averages over the ranks
                    for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("entropy", ent),
                                       ("clipfrac", pg_stats["clipfrac"]), ("approx_kl", pg_stats["approx_kl"]),
                                       ("vf_clipfrac", vf_stats["vf_clipfrac"]), ("ratio", pg_stats["ratio"])):
                        stats[key] += float(value.detach()) * weight
                if world > 1:  # the ranks' weighted shares add up to the global figures (target_kl sees those)
                    totals = sum_across_ranks(torch.tensor(list(stats.values()), dtype=torch.float64,
                                                           device=self.device))
                    stats = dict(zip(stats, totals.tolist()))
                stats["grad_norm"] = clip_grad_norm(self, trainable_parameters(self), s.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                updates += 1
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                if s.target_kl is not None and stats["approx_kl"] > s.target_kl:
                    early_stop = True
                    break
            if early_stop:
                break
        out = {key: value / max(1, updates) for key, value in sums.items()}
        out.update(updates=updates, epochs=epoch + 1, early_stopped=float(early_stop))
        return out

    # -------------------------------------------------------------------------------------------- 7. metrics
    def step_metrics(self, rollouts: Rollouts, scored, kl, mask, rewards, values, returns, advantages, update,
                     kl_per_sequence: float, kl_coef: float, times: dict) -> dict:
        lengths = rollouts.lengths.float()
        results = rollouts.results
        passed = np.array([r.passed for r in results], dtype=float)
        explained = [r for r in rollouts.responses if r.explanation is not None]
        m = {}
        for key in ("r_code", "r_expl", "s_cb", "s_ut", "s_ex", "total"):
            values_ = getattr(scored, key)
            finite = values_[~np.isnan(values_)]
            m[f"reward/{key}"] = float(finite.mean()) if len(finite) else float("nan")
        m["reward/kl_penalty"] = float((-kl_coef * kl * mask).sum(1).mean())
        m["reward/total_with_kl"] = m["reward/total"] + m["reward/kl_penalty"]
        m["reward/token_rewards_sum"] = float((rewards * mask).sum(1).mean())
        for key in ("n_fallback_code", "n_fallback_explanation", "n_refine_only"):
            m[f"reward/{key}"] = scored.stats.get(key, 0)
        m["objective/kl"] = kl_per_sequence
        m["objective/kl_per_token"] = float(masked_mean(kl, mask))
        m["objective/kl_coef"] = kl_coef
        m["objective/entropy"] = update.get("entropy", float("nan"))
        for key in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "vf_clipfrac", "ratio", "grad_norm"):
            m[f"ppo/{key}"] = update.get(key, float("nan"))
        m["ppo/updates"], m["ppo/epochs"], m["ppo/early_stopped"] = update["updates"], update["epochs"], \
            update["early_stopped"]
        m["ppo/explained_variance"] = explained_variance(values, returns, mask)
        m["ppo/values_mean"] = float(masked_mean(values, mask))
        m["ppo/returns_mean"] = float(masked_mean(returns, mask))
        m["ppo/advantages_std"] = float(masked_mean(advantages ** 2, mask).sqrt())
        m["rollout/response_length_mean"] = float(lengths.mean())
        m["rollout/response_length_max"] = float(lengths.max())
        m["rollout/response_length_min"] = float(lengths.min())
        m["rollout/explanation_tokens_mean"] = float(np.mean([r.explanation_end + 1 for r in explained
                                                              if r.explanation_end is not None] or [0]))
        m["rollout/pass_rate"] = float(passed.mean())
        m["rollout/no_code_rate"] = float(np.mean([r.code is None for r in rollouts.responses]))
        m["rollout/truncated_rate"] = float(np.mean([r.truncated for r in rollouts.responses]))
        m["rollout/n"] = len(rollouts)
        now = dict(self.sandbox.stats())
        # status/<s> per verdict status, blocked included: a policy that starts forging verdicts shows up here.
        for key in ("executed", "cache_hits", "timeouts", "errors", "worker_restarts",
                    *(k for k in now if k.startswith("status/"))):
            m[f"sandbox/{key}"] = int(now.get(key, 0)) - int(self._sandbox_before.get(key, 0))
        self._sandbox_before = now
        for key in ("codebleu", "embedding"):
            m[f"time/reward_{key}"] = float(scored.stats.get(f"time_{key}_s", 0.0))
        total = sum(times.values())
        for key, value in times.items():
            m[f"time/{key}"] = value
        m["time/step"] = total
        m["time/judge_reward_share"] = (times["judge"] + times["reward"]) / total if total > 0 else 0.0
        m["rollout/samples_per_s"] = len(rollouts) / total if total > 0 else 0.0
        return m

    def log_rollouts(self, rollouts: Rollouts, scored) -> None:
        """A few sampled rollouts: to ``rollouts.jsonl`` in the run dir and a W&B table."""
        n = min(self.settings.table_rows, len(rollouts))
        cols = ["step", "problem_id", "wrong_id", "explanation", "code", "status", "n_passed", "n_tests", "s_ut",
                "s_cb", "s_ex", "r_code", "r_expl", "completion"]
        rows = []
        for i in range(n):
            response, result = rollouts.responses[i], rollouts.results[i]
            rows.append([self.ppo_step, rollouts.items[i].problem.task_id, rollouts.items[i].wrong_id,
                         response.explanation, response.code, result.status, result.n_passed, result.n_tests,
                         _num(scored.s_ut[i]), _num(scored.s_cb[i]), _num(scored.s_ex[i]), _num(scored.r_code[i]),
                         _num(scored.r_expl[i]), response.text])
        if self.run_dir is not None:
            with open(self.run_dir / "rollouts.jsonl", "a", encoding="utf-8") as f:
                f.writelines(json.dumps(dict(zip(cols, row))) + "\n" for row in rows)
        self.run_logger.table("rollouts/samples", cols, rows)

    # -------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["selfdebug_ppo"] = {
            "ppo_step": self.ppo_step, "kl_ctl": self.kl_ctl.state_dict(), "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
        if self.lora:
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("selfdebug_ppo")
        if not state:
            raise ConfigError("the checkpoint holds no PPO state; it was not written by the RL stage")
        self.ppo_step = int(state["ppo_step"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.history = list(state.get("history") or [])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        _set_numpy_rng_state(rng["numpy"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def _numpy_rng_state() -> tuple:
    """NumPy's RNG state with its key array as a tensor, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _set_numpy_rng_state(state: tuple) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Python, NumPy and torch (CPU and CUDA) seeded from the run's seed, the step number and the rank."""
    value = (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


# ------------------------------------------------------------------------------------------------ callbacks

class PPOCheckpoint(pl.Callback):
    """A Lightning checkpoint every ``every`` PPO steps, at ``stop_after`` and at the last step
    (``step-NNNNNNN.ckpt``, the PPO step; written under a temporary name, then renamed; the newest ``keep``
    stay). At ``stop_after`` the run stops; the same command resumes it."""

    def __init__(self, dirpath: Path, every: int, keep: int, stop_after: int | None, total_steps: int):
        self.dirpath, self.every, self.keep = Path(dirpath), int(every), int(keep)
        self.stop_after, self.total_steps = stop_after, int(total_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.ppo_step
        stop = self.stop_after is not None and step >= self.stop_after and step < self.total_steps
        if (self.every and step % self.every == 0) or step == self.total_steps or stop:
            save_step_checkpoint(trainer, self.dirpath, step, self.keep)
        if stop:
            trainer.should_stop = True


def check_has_wrong_solutions(trajectories: list[tuple[str, dict]], path) -> None:
    if not any((rec.get("wrong_code") or "").strip() for _, rec in trajectories):
        raise DataError(f"dataset.path: {path} holds no wrong solutions (no trajectory record with a wrong_code); "
                        "RL needs wrong programs to explain and fix: collect with a student that makes mistakes, "
                        "or teacher=mutation with mutants_per_problem > 0")
