"""What a PPO step reports: every reward term, KL, entropy, clipping, value loss, explained variance, lengths,
pass rate, sandbox counts and the time split (metrics.jsonl / W&B), sampled rollouts (rollouts.jsonl and a W&B
table), and the summary's averages over the last steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from selfdebug.core.prompts import MODES
from selfdebug.train.rl.ppo_math import explained_variance, masked_mean
from selfdebug.train.rl.tokens import Rollouts

# summary.json's final/* figures: each one's mean over the last rl.summary_window steps.
FINAL_KEYS = ("reward/total", "reward/total_with_kl", "reward/r_code", "reward/r_expl", "reward/s_ut",
              "reward/s_cb", "reward/s_ex", "rollout/pass_rate", "rollout/no_code_rate",
              "rollout/response_length_mean", "objective/kl", "objective/entropy", "ppo/value_loss",
              "ppo/explained_variance", "ppo/clipfrac", "time/step", "time/judge_reward_share")
# rl.mode=mixed: the same figures per instruction format (reward/<mode>/..., rollout/<mode>/pass_rate).
MODE_KEYS = ("total", "r_code", "r_expl", "s_ut", "s_cb", "s_ex")
FINAL_KEYS += tuple(f"reward/{mode}/{key}" for mode in MODES for key in MODE_KEYS) + \
    tuple(f"rollout/{mode}/pass_rate" for mode in MODES)
SANDBOX_KEYS = ("executed", "cache_hits", "timeouts", "errors", "worker_restarts")


def step_metrics(rollouts: Rollouts, scored, kl, mask, rewards, values, returns, advantages, update: dict,
                 kl_per_sequence: float, kl_coef: float, times: dict, sandbox_delta: dict,
                 by_mode: bool = False) -> dict:
    """One PPO step's figures on this rank (``reduce_metrics`` combines the ranks'); ``by_mode`` adds the reward
    terms and pass rate of each instruction format (``rl.mode=mixed``)."""
    lengths = rollouts.lengths.float()
    passed = np.array([r.passed for r in rollouts.results], dtype=float)
    explained = [r for r in rollouts.responses if r.explanation is not None]
    m = {}
    for key in ("r_code", "r_expl", "s_cb", "s_ut", "s_ex", "total"):
        values_ = getattr(scored, key)
        finite = values_[~np.isnan(values_)]
        m[f"reward/{key}"] = float(finite.mean()) if len(finite) else float("nan")
    if by_mode:
        m.update(mode_figures(rollouts, scored, passed))
    m["reward/kl_penalty"] = float((-kl_coef * kl * mask).sum(1).mean())
    m["reward/total_with_kl"] = m["reward/total"] + m["reward/kl_penalty"]
    m["reward/token_rewards_sum"] = float((rewards * mask).sum(1).mean())
    for key in ("n_fallback_code", "n_fallback_explanation", "n_missing_explanation", "n_refine_only",
                "n_unchanged"):
        m[f"reward/{key}"] = scored.stats.get(key, 0)
    m["objective/kl"] = kl_per_sequence
    m["objective/kl_per_token"] = float(masked_mean(kl, mask))
    m["objective/kl_coef"] = kl_coef
    m["objective/entropy"] = update.get("entropy", float("nan"))
    for key in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "vf_clipfrac", "ratio", "grad_norm"):
        m[f"ppo/{key}"] = update.get(key, float("nan"))
    m["ppo/updates"], m["ppo/epochs"], m["ppo/early_stopped"] = update["updates"], update["epochs"], \
        update["early_stopped"]
    if "gradient_cosine" in update:  # rl.gradient_cosine
        m["ppo/gradient_cosine"] = update["gradient_cosine"]
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
    for key, count in sandbox_delta.items():
        m[f"sandbox/{key}"] = count
    for key in ("codebleu", "embedding"):
        m[f"time/reward_{key}"] = float(scored.stats.get(f"time_{key}_s", 0.0))
    total = sum(times.values())
    for key, value in times.items():
        m[f"time/{key}"] = value
    m["time/step"] = total
    m["time/judge_reward_share"] = (times["judge"] + times["reward"]) / total if total > 0 else 0.0
    m["rollout/samples_per_s"] = len(rollouts) / total if total > 0 else 0.0
    return m


def mode_figures(rollouts: Rollouts, scored, passed: np.ndarray) -> dict:
    """Per instruction format: the rollouts' count, mean reward terms and pass rate (NaN when none this step)."""
    modes = np.array([item.mode for item in rollouts.items])
    out = {}
    for mode in MODES:
        rows = modes == mode
        out[f"reward/n_{mode}"] = int(rows.sum())
        for key in MODE_KEYS:
            values_ = getattr(scored, key)[rows]
            finite = values_[~np.isnan(values_)]
            out[f"reward/{mode}/{key}"] = float(finite.mean()) if len(finite) else float("nan")
        out[f"rollout/{mode}/pass_rate"] = float(passed[rows].mean()) if rows.any() else float("nan")
    return out


def sandbox_delta(now: dict, before: dict) -> dict:
    """The sandbox's counters since ``before``, with one ``status/<s>`` per verdict status: a policy that starts
    forging verdicts shows up as ``sandbox/status/blocked``."""
    keys = [*SANDBOX_KEYS, *sorted(k for k in now if k.startswith("status/"))]
    return {key: int(now.get(key, 0)) - int(before.get(key, 0)) for key in keys}


def log_rollouts(run_logger, run_dir: Path | None, step: int, rollouts: Rollouts, scored, n: int) -> None:
    """The first ``n`` rollouts of a step: to ``rollouts.jsonl`` in the run dir and a W&B table."""
    cols = ["step", "problem_id", "wrong_id", "mode", "explanation", "code", "status", "n_passed", "n_tests", "s_ut",
            "s_cb", "s_ex", "r_code", "r_expl", "completion"]
    rows = []
    for i in range(min(n, len(rollouts))):
        response, result = rollouts.responses[i], rollouts.results[i]
        rows.append([step, rollouts.items[i].problem.task_id, rollouts.items[i].wrong_id, rollouts.items[i].mode,
                     response.explanation, response.code, result.status, result.n_passed, result.n_tests,
                     finite_or_none(scored.s_ut[i]), finite_or_none(scored.s_cb[i]), finite_or_none(scored.s_ex[i]),
                     finite_or_none(scored.r_code[i]), finite_or_none(scored.r_expl[i]), response.text])
    if run_dir is not None:
        with open(run_dir / "rollouts.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(dict(zip(cols, row))) + "\n" for row in rows)
    run_logger.table("rollouts/samples", cols, rows)


def final_figures(history: list[dict], window: int) -> dict:
    """The mean of each headline figure over the last ``window`` steps."""
    tail = history[-window:]
    out = {}
    for key in FINAL_KEYS:
        values = [h[key] for h in tail if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
        if values:
            out[key] = sum(values) / len(values)
    return out


def finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
