"""The composite reward and where it lands in the response.

Terms (each with a weight under ``reward.weights``):

    R_code = 5 * (w_cb * S_cb + w_ut * S_ut) - 5         on the response's final token
    R_expl = w_ex * (50 * S_ex - 35) / 3                  on the explanation's last token
    -kl_coef * KL_t                                       on every token t

An answer that leaves the wrong program as it was (``unchanged_code: no_credit``, the default) gets S_cb := 0:
the given program is one planted bug away from the verified fix, so its CodeBLEU is high (0.86 on average over
the quickstart's MBPP mutants) and returning it unchanged would earn about half of the way from "no code" to
"fixed" (R_code -0.1 on average, against -5 and 5) for doing nothing. S_ut keeps the tests it passes.
``unchanged_code: score`` scores it like any other program (the paper does not say).

``placement: sequence`` puts R_code and R_expl both on the final token (the paper's span-level choice is
``span``). A refine-only sample has no explanation and gets R_code alone. ``clip`` bounds each of R_code and
R_expl to [-clip, clip] before placement, so the two placements always hand out the same total.

Fallback when the wrong program has no verified reference (``fallback: unit_tests``, the default): S_cb is
replaced by S_ut, so R_code = 5 * (w_cb + w_ut) * S_ut - 5 stays in [-5, 5] with the paper's weights, and
R_expl = 0 (no reference to be near). The same R_expl = 0 applies when the wrong program has verified
refinements but no verified explanation (refine-only data). Both cases are counted in the stats.
``fallback: error`` makes a missing reference an error instead.

Bounds of R_expl (``s_ex_min``, 0 by default): a cosine similarity can be negative, which would take R_expl
down to (50 * -1 - 35) / 3 = -28.3, far below the -5 the paper's anchors give S_ex = 0.4. S_ex is clamped to
[s_ex_min, 1], and an explain-then-refine rollout that wrote no explanation scores S_ex := s_ex_min, so with
the default R_expl stays in [-35/3, 5] (about [-11.7, 5]): no explanation is as bad as an unrelated one, never
worse. ``s_ex_min: null`` keeps the raw cosine (and 0 for a missing explanation).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.execution import ExecResult
from selfdebug.rewards.code import code_reward, codebleu_scores, unit_test_scores
from selfdebug.rewards.explanation import ExplanationScorer, default_model_path, explanation_reward
from selfdebug.rewards.references import ReferenceIndex, build_references

COMPONENTS = ("codebleu", "unit_tests", "explanation")
PLACEMENTS = ("span", "sequence")
FALLBACKS = ("unit_tests", "error")
UNCHANGED = ("no_credit", "score")


# ------------------------------------------------------------------------------------------ placement (pure)

def place_rewards(n_tokens: int, explanation_end: int | None, r_expl: float, r_code: float, kl=None,
                  kl_coef: float = 0.0, placement: str = "span") -> np.ndarray:
    """Per-token rewards of one response of ``n_tokens`` tokens.

    ``explanation_end``: index of the explanation's last token, or None (refine-only: nothing to put there;
    any R_expl then lands on the final token). ``kl``: per-token KL estimate to the reference policy (length
    ``n_tokens``) or None for no penalty.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement = {placement!r}; choose one of {PLACEMENTS}")
    if n_tokens < 1:
        raise ValueError(f"a response needs at least one token to carry its reward (got {n_tokens})")
    last = n_tokens - 1
    if explanation_end is not None and not 0 <= explanation_end <= last:
        raise ValueError(f"explanation_end = {explanation_end} is outside the response's {n_tokens} tokens")
    rewards = np.zeros(n_tokens, dtype=np.float64)
    if kl is not None:
        kl = np.asarray(kl, dtype=np.float64)
        if kl.shape != (n_tokens,):
            raise ValueError(f"kl has shape {kl.shape}; expected ({n_tokens},)")
        rewards -= kl_coef * kl
    expl_at = last if placement == "sequence" or explanation_end is None else explanation_end
    rewards[expl_at] += r_expl
    rewards[last] += r_code
    return rewards


def place_rewards_batch(lengths, explanation_ends: Sequence[int | None], r_expl, r_code, kl=None,
                        kl_coef: float = 0.0, placement: str = "span") -> torch.Tensor:
    """:func:`place_rewards` for a right-padded batch: a ``[B, T]`` tensor, zero past each response's length.

    ``lengths``: response token counts ``[B]``; ``explanation_ends``: per response an index or None (or -1);
    ``kl``: ``[B, T]`` tensor (its device and dtype are kept) or None, in which case ``T = max(lengths)``.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement = {placement!r}; choose one of {PLACEMENTS}")
    device = kl.device if isinstance(kl, torch.Tensor) else torch.device("cpu")
    dtype = kl.dtype if isinstance(kl, torch.Tensor) and kl.is_floating_point() else torch.float32
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=device).reshape(-1)
    batch = lengths.numel()
    if len(explanation_ends) != batch:
        raise ValueError(f"{len(explanation_ends)} explanation ends for {batch} responses")
    if batch and int(lengths.min()) < 1:
        raise ValueError("every response needs at least one token to carry its reward")
    width = int(kl.shape[1]) if kl is not None else (int(lengths.max()) if batch else 0)
    if batch and int(lengths.max()) > width:
        raise ValueError(f"a response of {int(lengths.max())} tokens does not fit kl's {width} columns")
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    rewards = torch.zeros(batch, width, dtype=dtype, device=device)
    if kl is not None:
        kl = torch.as_tensor(kl, dtype=dtype, device=device)
        if tuple(kl.shape) != (batch, width):
            raise ValueError(f"kl has shape {tuple(kl.shape)}; expected ({batch}, {width})")
        rewards = torch.where(mask, -kl_coef * kl, rewards)
    last = lengths - 1
    ends = torch.tensor([-1 if e is None else int(e) for e in explanation_ends], dtype=torch.long, device=device)
    if bool(((ends > last) | (ends < -1)).any()):
        raise ValueError(f"explanation ends {ends.tolist()} fall outside responses of lengths {lengths.tolist()}")
    expl_at = last if placement == "sequence" else torch.where(ends < 0, last, ends)
    rows = torch.arange(batch, device=device)
    rewards[rows, expl_at] += torch.as_tensor(r_expl, dtype=dtype, device=device).reshape(-1)
    rewards[rows, last] += torch.as_tensor(r_code, dtype=dtype, device=device).reshape(-1)
    return rewards


# ------------------------------------------------------------------------------------------ the component

@dataclass
class RewardSample:
    """One rollout to score: the refinement as the sandbox ran it and its verdict. ``explanation`` is None for
    a refine-only sample (an explain-then-refine sample that wrote no explanation has ``""``, which scores
    S_ex = 0). ``unchanged``: the answer left the wrong program as it was (``same_program``)."""

    wrong_id: str
    program: str
    result: ExecResult
    explanation: str | None = None
    unchanged: bool = False


@dataclass
class RewardBatch:
    """Per-sample values (NaN where a term was not computed) and the batch's stats for the logs."""

    s_cb: np.ndarray
    s_ut: np.ndarray
    s_ex: np.ndarray
    r_code: np.ndarray
    r_expl: np.ndarray
    has_explanation: np.ndarray
    fallback_code: np.ndarray
    fallback_explanation: np.ndarray
    missing_explanation: np.ndarray | None = None  # asked for an explanation, wrote none (S_ex := s_ex_min)
    unchanged: np.ndarray | None = None  # left the wrong program as it was (S_cb := 0 under no_credit)
    stats: dict = field(default_factory=dict)

    @property
    def total(self) -> np.ndarray:
        """R_code + R_expl per sample (the task reward before the KL penalty)."""
        return self.r_code + self.r_expl

    def __len__(self) -> int:
        return len(self.r_code)


def _number(key: str, value, *, low: float | None = None, strict_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{key} = {value!r} is not a number; give a finite number (e.g. {key}=1.0)")
    value = float(value)
    if low is not None and (value <= low if strict_low else value < low):
        raise ConfigError(f"{key} = {value} must be {'>' if strict_low else '>='} {low}")
    return value


class CompositeReward:
    """The configured reward: scores a batch of rollouts into terms, and places them on tokens.

    Built by Hydra from ``conf/reward/*.yaml``::

        reward = hydra.utils.instantiate(cfg.reward, references=dataset_dir)
        batch = reward.score([RewardSample(wrong_id, program, exec_result, explanation), ...])
        token_rewards = reward.token_rewards(batch, lengths, explanation_ends, kl)   # [B, T]

    The embedding model is loaded on first use, and only when the explanation weight is not zero.
    """

    def __init__(self, weights: Mapping | None = None, kl_coef: float = 0.2, clip: float | None = None,
                 placement: str = "span", fallback: str = "unit_tests", explanation_model: str | None = None,
                 embedding_device: str = "cpu", embedding_batch_size: int = 64, codebleu_raw: bool = False,
                 s_ex_min: float | None = 0.0, unchanged_code: str = "no_credit",
                 references: ReferenceIndex | str | Path | None = None,
                 explanation_scorer: ExplanationScorer | None = None, name: str = "custom"):
        weights = {} if weights is None else weights
        if not isinstance(weights, Mapping):
            raise ConfigError(f"reward.weights = {weights!r}; expected a mapping of {COMPONENTS} to numbers")
        unknown = [k for k in weights if k not in COMPONENTS]
        if unknown:
            raise ConfigError(f"reward.weights.{unknown[0]}: no reward component of that name; "
                              f"choose from {', '.join(COMPONENTS)}")
        self.weights = {k: _number(f"reward.weights.{k}", weights.get(k, 1.0), low=0.0) for k in COMPONENTS}
        self.kl_coef = _number("reward.kl_coef", kl_coef, low=0.0)
        self.clip = None if clip is None else _number("reward.clip", clip, low=0.0, strict_low=True)
        if placement not in PLACEMENTS:
            raise ConfigError(f"reward.placement = {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        if fallback not in FALLBACKS:
            raise ConfigError(f"reward.fallback = {fallback!r}; choose one of {', '.join(FALLBACKS)}")
        if unchanged_code not in UNCHANGED:
            raise ConfigError(f"reward.unchanged_code = {unchanged_code!r}; choose one of {', '.join(UNCHANGED)}")
        self.placement = placement
        self.fallback = fallback
        self.unchanged_code = unchanged_code
        self.name = name
        self.codebleu_raw = bool(codebleu_raw)
        self.s_ex_min = None if s_ex_min is None else _number("reward.s_ex_min", s_ex_min, low=-1.0)
        if self.s_ex_min is not None and self.s_ex_min > 1.0:
            raise ConfigError(f"reward.s_ex_min = {self.s_ex_min} must be <= 1 (S_ex is a cosine similarity)")
        self.embedding_device = embedding_device
        self.embedding_batch_size = int(_number("reward.embedding_batch_size", embedding_batch_size, low=1))
        self._scorer = explanation_scorer
        self.explanation_model = explanation_model
        if self.uses_explanation and explanation_scorer is None and explanation_model is None:
            default_model_path()  # fail now, not at the first PPO step, if the bundled model is missing
        self.references: ReferenceIndex | None = None
        if references is not None:
            self.attach_references(references)

    # ---------------------------------------------------------------------------------------------- setup
    @property
    def uses_explanation(self) -> bool:
        return self.weights["explanation"] != 0.0

    @property
    def scorer(self) -> ExplanationScorer:
        """The sentence-embedding scorer, loaded on first use."""
        if self._scorer is None:
            self._scorer = ExplanationScorer(self.explanation_model, device=self.embedding_device,
                                             batch_size=self.embedding_batch_size)
        return self._scorer

    def attach_references(self, references: ReferenceIndex | str | Path) -> ReferenceIndex:
        """Use ``references`` (an index, or the collected dataset to build one from) from now on."""
        self.references = references if isinstance(references, ReferenceIndex) else build_references(references)
        return self.references

    # ---------------------------------------------------------------------------------------------- scoring
    def _clip(self, values: np.ndarray) -> np.ndarray:
        return values if self.clip is None else np.clip(values, -self.clip, self.clip)

    def score(self, samples: Sequence[RewardSample], references: ReferenceIndex | None = None) -> RewardBatch:
        """Every term for every sample, and stats (means of each term, fallback counts, time per term)."""
        refs = references if references is not None else self.references
        if refs is None:
            raise ConfigError("the reward has no references: pass references= (the collected dataset folder) "
                              "to CompositeReward, or call attach_references() before scoring")
        n = len(samples)
        w_cb, w_ut, w_ex = (self.weights[k] for k in COMPONENTS)
        code_refs = [refs.refinements_for(s.wrong_id) for s in samples]
        fallback_code = np.array([not r for r in code_refs], dtype=bool)
        if self.fallback == "error" and fallback_code.any():
            wid = samples[int(np.argmax(fallback_code))].wrong_id
            raise DataError(f"wrong program {wid!r} has no verified refinement to compare with; drop it from the "
                            f"RL data or set reward.fallback=unit_tests")
        has_expl = np.array([s.explanation is not None for s in samples], dtype=bool)

        s_ut = unit_test_scores([s.result for s in samples])
        t0 = time.perf_counter()
        s_cb = np.full(n, np.nan)
        if w_cb != 0.0:
            todo = np.flatnonzero(~fallback_code)
            s_cb[todo] = codebleu_scores([samples[i].program for i in todo], [code_refs[i] for i in todo],
                                         raw_package_score=self.codebleu_raw)
        s_cb_used = np.where(fallback_code, s_ut, np.nan_to_num(s_cb, nan=0.0))
        unchanged = np.array([bool(s.unchanged) for s in samples], dtype=bool)
        if self.unchanged_code == "no_credit":
            s_cb_used = np.where(unchanged, 0.0, s_cb_used)
        t1 = time.perf_counter()

        s_ex = np.full(n, np.nan)
        fallback_expl = np.zeros(n, dtype=bool)
        missing_expl = np.zeros(n, dtype=bool)
        if self.uses_explanation:
            expl_refs = [refs.explanations_for(s.wrong_id) for s in samples]
            fallback_expl = has_expl & np.array([not r for r in expl_refs], dtype=bool)
            written = np.array([bool((s.explanation or "").strip()) for s in samples], dtype=bool)
            missing_expl = has_expl & ~fallback_expl & ~written
            s_ex[missing_expl] = 0.0 if self.s_ex_min is None else self.s_ex_min
            todo = np.flatnonzero(has_expl & ~fallback_expl & written)
            if len(todo):
                s_ex[todo] = self.scorer.similarities([samples[i].explanation for i in todo],
                                                      [expl_refs[i] for i in todo])
            if self.s_ex_min is not None:
                s_ex = np.where(np.isnan(s_ex), np.nan, np.clip(s_ex, self.s_ex_min, 1.0))
        t2 = time.perf_counter()

        r_code = self._clip(code_reward(s_cb_used, s_ut, w_cb, w_ut) * np.ones(n))
        r_expl = np.where(np.isnan(s_ex), 0.0, self._clip(explanation_reward(np.nan_to_num(s_ex), w_ex) * np.ones(n)))
        batch = RewardBatch(s_cb=s_cb, s_ut=s_ut, s_ex=s_ex, r_code=r_code, r_expl=r_expl, has_explanation=has_expl,
                            fallback_code=fallback_code, fallback_explanation=fallback_expl,
                            missing_explanation=missing_expl, unchanged=unchanged)
        batch.stats = self._stats(batch, t1 - t0, t2 - t1)
        return batch

    @staticmethod
    def _stats(b: RewardBatch, t_codebleu: float, t_embedding: float) -> dict:
        n = len(b)
        stats = {"n": n, "n_refine_only": int((~b.has_explanation).sum()),
                 "n_fallback_code": int(b.fallback_code.sum()),
                 "n_fallback_explanation": int(b.fallback_explanation.sum()),
                 "n_missing_explanation": int(b.missing_explanation.sum()) if b.missing_explanation is not None
                 else 0,
                 "n_unchanged": int(b.unchanged.sum()) if b.unchanged is not None else 0,
                 "fallback_rate": float(b.fallback_code.mean()) if n else 0.0,
                 "time_codebleu_s": t_codebleu, "time_embedding_s": t_embedding}
        for key, values in (("s_cb", b.s_cb), ("s_ut", b.s_ut), ("s_ex", b.s_ex), ("r_code", b.r_code),
                            ("r_expl", b.r_expl), ("total", b.total)):
            finite = values[~np.isnan(values)]
            if len(finite):
                stats[f"{key}_mean"] = float(finite.mean())
        return stats

    # ---------------------------------------------------------------------------------------------- placement
    def token_rewards(self, batch: RewardBatch, lengths, explanation_ends: Sequence[int | None],
                      kl=None) -> torch.Tensor:
        """Per-token rewards ``[B, T]`` for the scored ``batch`` with this config's kl_coef and placement."""
        return place_rewards_batch(lengths, explanation_ends, batch.r_expl, batch.r_code, kl=kl,
                                   kl_coef=self.kl_coef, placement=self.placement)

    def __repr__(self) -> str:
        return (f"CompositeReward(name={self.name!r}, weights={self.weights}, kl_coef={self.kl_coef}, "
                f"clip={self.clip}, placement={self.placement!r}, fallback={self.fallback!r}, "
                f"s_ex_min={self.s_ex_min}, unchanged_code={self.unchanged_code!r})")
