"""Text <-> tokens for PPO: a response cut at its stop, parsed, and the token that ends its explanation
(where R_expl lands); padded batches of prompts and responses (``Rollouts``) and their micro-batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from selfdebug.core.answers import parse_answer
from selfdebug.core.prompts import ParsedCompletion
from selfdebug.train.rl.data import RLItem


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
                  explained: bool, raw_code: bool = False, answer_form: str = "full", wrong_program: str = ""
                  ) -> Response:
    """Cut generated ``ids`` at the first stop token (kept: the policy learns to stop) or at the end of the
    first stop string, then parse it into explanation and code and find the explanation's last token.
    ``raw_code``: the whole text is the program (no fence, no explanation). ``answer_form``: an edit form's
    fix is applied to ``wrong_program``, so ``code`` is always the whole program."""
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
    parsed = parse_answer(text, answer_form, wrong_program)
    if raw_code:
        parsed = ParsedCompletion(explanation="", code=text.rstrip() + "\n" if text.strip() else None)
    explanation, explanation_end = None, None
    if explained:
        explanation = parsed.explanation  # "" when none was written (it scores S_ex = 0)
        if explanation:
            # parse_answer returns text[:start].strip(): the explanation begins after the leading blanks.
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
