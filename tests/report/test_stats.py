"""The statistics of `espresso report` against values computed independently: published
tables and the closed forms written out here with `math` only (no scipy)."""

from __future__ import annotations

import math

import pytest

from state.report.stats import ab_test, lift, wilson

Z = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n,low,high", [
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_1998(k, n, low, high):
    iv = wilson(k, n)
    assert iv.value == pytest.approx(k / n)
    assert round(iv.low, 4) == low
    assert round(iv.high, 4) == high


@pytest.mark.parametrize("k,n", [(100, 2000), (200, 2000), (1, 1), (0, 5), (7, 7), (12345, 10_000_000)])
def test_wilson_matches_the_closed_form(k, n):
    iv = wilson(k, n)
    low, high = wilson_by_hand(k, n)
    assert iv.low == pytest.approx(max(low, 0.0), abs=1e-12)
    assert iv.high == pytest.approx(min(high, 1.0), abs=1e-12)


def test_wilson_without_sends_is_none():
    assert wilson(0, 0) is None


def chi2_yates_by_hand(a: int, b: int, c: int, d: int) -> float:
    """2 x 2 table [[a, b], [c, d]], Pearson's statistic with Yates' continuity correction."""
    n = a + b + c + d
    return n * max(abs(a * d - b * c) - n / 2, 0) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))


def chi2_by_hand(table: list[list[int]]) -> float:
    rows = [sum(r) for r in table]
    cols = [sum(c) for c in zip(*table)]
    n = sum(rows)
    return sum((table[i][j] - rows[i] * cols[j] / n) ** 2 / (rows[i] * cols[j] / n)
               for i in range(len(rows)) for j in range(len(cols)))


def test_two_variants_chi_square_with_yates_correction():
    # A: 100 of 2,000 converted, B: 140 of 2,000
    res = ab_test([("A", 100, 2000), ("B", 140, 2000)], min_sends=100)
    chi2 = chi2_yates_by_hand(100, 1900, 140, 1860)
    assert res.chi2 == pytest.approx(chi2, rel=1e-12)
    assert res.dof == 1
    assert res.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)  # chi2, 1 df
    assert res.p_value < 0.05 and res.winner == "B"


def test_textbook_two_by_two():
    # 2 x 2 table [[10, 90], [20, 80]]: Yates chi2 = 200 (|800-1800| - 100)^2 / (100*100*30*170) = 3.1765
    res = ab_test([("A", 10, 100), ("B", 20, 100)], min_sends=100)
    assert round(res.chi2, 4) == 3.1765
    assert round(res.p_value, 4) == 0.0747
    assert res.winner is None and "not significant" in res.reason


def test_three_variants_pearson_chi_square():
    groups = [("A", 50, 1000), ("B", 70, 1000), ("C", 95, 1000)]
    res = ab_test(groups, min_sends=100)
    chi2 = chi2_by_hand([[c, n - c] for _, c, n in groups])
    assert res.chi2 == pytest.approx(chi2, rel=1e-12)
    assert res.dof == 2
    assert res.p_value == pytest.approx(math.exp(-chi2 / 2), rel=1e-9)  # chi2 survival function, 2 df
    assert res.winner == "C"


def test_no_winner_below_min_sends_or_small_expected_counts():
    few = ab_test([("A", 5, 90), ("B", 40, 90)], min_sends=100)
    assert few.p_value < 0.05 and few.winner is None
    assert "--min-sends 100" in few.reason
    small = ab_test([("A", 0, 150), ("B", 8, 150)], min_sends=100)  # expected conversions 4 < 5
    assert small.p_value < 0.05 and small.winner is None and "expected count" in small.reason
    assert ab_test([("A", 5, 90), ("B", 40, 90)], min_sends=50).winner == "B"


def test_no_test_without_two_variants_or_without_conversions():
    assert ab_test([("A", 10, 100)], 100) is None
    assert ab_test([("A", 10, 100), ("B", 0, 0)], 100) is None
    none = ab_test([("A", 0, 100), ("B", 0, 100)], 100)
    assert none.p_value is None and none.winner is None and "no conversion" in none.reason


def test_tie_for_the_best_rate_names_no_winner():
    res = ab_test([("A", 20, 1000), ("B", 60, 1000), ("C", 60, 1000)], 100)
    assert res.p_value < 0.05 and res.winner is None and "tie" in res.reason


def katz_by_hand(x1: int, n1: int, x0: int, n0: int) -> tuple[float, float, float]:
    rr = (x1 / n1) / (x0 / n0)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
    return rr - 1, rr * math.exp(-Z * se) - 1, rr * math.exp(Z * se) - 1


@pytest.mark.parametrize("x1,n1,x0,n0", [(200, 2000, 20, 400), (27, 122, 44, 487), (5, 50, 9, 60),
                                         (1000, 100_000, 90, 10_000)])
def test_lift_is_the_katz_log_interval(x1, n1, x0, n0):
    value, low, high = katz_by_hand(x1, n1, x0, n0)
    iv = lift(x1, n1, x0, n0)
    assert iv.value == pytest.approx(value, rel=1e-12)
    assert iv.low == pytest.approx(low, rel=1e-9)
    assert iv.high == pytest.approx(high, rel=1e-9)


def test_lift_edge_cases():
    assert lift(10, 100, 0, 50) is None  # the holdout never converted: infinite ratio
    assert lift(10, 100, 5, 0) is None and lift(0, 0, 5, 50) is None
    none_converted = lift(0, 100, 5, 50)
    assert none_converted.value == -1.0 and none_converted.low is None and none_converted.high is None
