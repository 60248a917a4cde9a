"""Unbiased pass@k (Chen et al., 2021) and bootstrap confidence intervals over problems."""

from __future__ import annotations

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k), as a product that neither overflows nor loses precision.
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def per_problem_pass_at_k(counts: list[tuple[int, int]], k: int) -> np.ndarray:
    return np.array([pass_at_k(n, c, k) for n, c in counts], dtype=float)


def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean, resampling problems with replacement."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def summarize_pass_at_k(counts: list[tuple[int, int]], ks, n_resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """{"pass@k": {"value", "ci_low", "ci_high"}} in percent, for each k that every problem has samples for."""
    out = {}
    n_min = min((n for n, _ in counts), default=0)
    for k in ks:
        if k > n_min:
            continue
        values = per_problem_pass_at_k(counts, k)
        low, high = bootstrap_ci(values, n_resamples, confidence, seed)
        out[f"pass@{k}"] = {"value": 100 * float(values.mean()), "ci_low": 100 * low, "ci_high": 100 * high}
    return out
