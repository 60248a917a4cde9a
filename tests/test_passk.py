import math

import numpy as np
import pytest

from selfdebug.evaluate.passk import bootstrap_ci, pass_at_k, summarize_pass_at_k


def brute_force(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (100, 7, 10), (20, 19, 10), (5, 5, 5)])
def test_matches_the_combinatorial_definition(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(100, 37, 1) == pytest.approx(0.37)


def test_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_summary_skips_k_larger_than_n_and_reports_percent():
    s = summarize_pass_at_k([(4, 4), (4, 0)], ks=[1, 10])
    assert set(s) == {"pass@1"}
    assert s["pass@1"]["value"] == pytest.approx(50.0)
    assert 0 <= s["pass@1"]["ci_low"] <= 50 <= s["pass@1"]["ci_high"] <= 100


def test_bootstrap_interval_is_seeded_and_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    small, large = rng.random(20), rng.random(2000)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    width = lambda v: np.subtract(*bootstrap_ci(v)[::-1])  # noqa: E731
    assert width(large) < width(small)
    low, high = bootstrap_ci(np.full(10, 0.25))
    assert low == high == pytest.approx(0.25)
