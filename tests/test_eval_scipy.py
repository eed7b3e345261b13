"""Student's t interval multipliers and the object-to-slot matching, now from scipy, against naive references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from worldssl.eval.prediction import best_matching
from worldssl.eval.report import summarize, t_quantile_975

# t(0.975, df) from printed tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2), to 3 decimals
KNOWN_T = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 19: 2.093, 29: 2.045,
           30: 2.042, 40: 2.021, 60: 2.000, 100: 1.984}


@pytest.mark.parametrize("df, want", sorted(KNOWN_T.items()))
def test_t_quantile_matches_the_printed_table(df, want):
    assert t_quantile_975(df) == pytest.approx(want, abs=5e-4)


def _t_cdf(x: float, df: int, n: int = 200_000) -> float:
    """Naive reference: Student's t density integrated by the midpoint rule from 0 to ``x``, plus 1/2."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    h = x / n
    mid = (np.arange(n) + 0.5) * h
    return 0.5 + float((c * (1 + mid**2 / df) ** (-(df + 1) / 2)).sum() * h)


@pytest.mark.parametrize("df", [1, 3, 31, 45, 120])
def test_t_quantile_is_the_975_point_of_the_density(df):
    """Beyond 30 degrees of freedom too (where the former table used the normal's 1.96)."""
    assert _t_cdf(t_quantile_975(df), df) == pytest.approx(0.975, abs=1e-6)


def test_t_quantile_tends_to_the_normal_and_refuses_zero_df():
    assert t_quantile_975(31) > t_quantile_975(1000) > 1.96 > t_quantile_975(10**7) - 1e-6
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_summary_interval_beyond_thirty_seeds():
    x = np.arange(41, dtype=float)
    s = summarize(x)
    assert s["ci95"] == pytest.approx(2.021 * x.std(ddof=1) / math.sqrt(41), rel=1e-3)


def _brute(m: np.ndarray) -> float:
    rows, cols = m.shape
    return max(sum(m[i, p[i]] for i in range(rows)) for p in itertools.permutations(range(cols), rows))


def test_matching_equals_brute_force_on_small_sizes():
    rng = np.random.default_rng(0)
    for rows, cols in [(1, 1), (3, 3), (4, 6), (5, 5), (6, 7)]:
        m = rng.random((rows, cols))
        assign, mean = best_matching(m)
        assert len(set(assign)) == rows and all(0 <= k < cols for k in assign)
        assert math.isclose(mean * rows, _brute(m), rel_tol=1e-12)
        assert math.isclose(sum(m[i, k] for i, k in enumerate(assign)), mean * rows, rel_tol=1e-12)


def test_matching_is_optimal_beyond_eight_objects_where_greedy_is_not():
    """12 objects: a greedy best-pair-first matching (what the former code did past 8) falls short here;
    the Hungarian matching reaches the optimum, which is known by construction."""
    n = 12
    rng = np.random.default_rng(1)
    perm = rng.permutation(n)
    m = np.full((n, n), 0.0)
    m[np.arange(n), perm] = 1.0  # the optimum: every object on its own slot, total n
    # a decoy that greedy takes first (1.5) but that blocks two unit pairs: 1.5 + ... < n
    i, j = 0, 1
    m[i, perm[j]] = 1.5
    assign, mean = best_matching(m)
    assert assign == perm.tolist() and mean == pytest.approx(1.0)
    for rows, cols in [(9, 9), (10, 13)]:  # random: against an exact solution from a dynamic programme
        m = rng.random((rows, cols))
        assign, mean = best_matching(m)
        assert len(set(assign)) == rows
        assert mean * rows == pytest.approx(_dp_best(m), rel=1e-12)
    with pytest.raises(ValueError):
        best_matching(rng.random((4, 3)))


def _dp_best(m: np.ndarray) -> float:
    """Exact maximum-weight assignment of rows to distinct columns, by DP over subsets of used columns."""
    rows, cols = m.shape
    best = {0: 0.0}
    for i in range(rows):
        nxt: dict[int, float] = {}
        for used, v in best.items():
            for k in range(cols):
                if not used >> k & 1:
                    key = used | 1 << k
                    if v + m[i, k] > nxt.get(key, -math.inf):
                        nxt[key] = v + m[i, k]
        best = nxt
    return max(best.values())
