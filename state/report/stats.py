"""The statistics of `espresso report`, from scipy: nothing here is hand-written numerics.

- `wilson`: the Wilson score interval of a proportion (`scipy.stats.binomtest(...).proportion_ci`).
- `lift`: treated rate / holdout rate - 1, with the Katz log interval of the ratio of two
  proportions (`scipy.stats.contingency.relative_risk`, Katz et al. 1978).
- `ab_test`: Pearson's chi-square test of independence of variant and converted / not
  converted (`scipy.stats.chi2_contingency`, which applies Yates' continuity correction when
  the table is 2 x 2, i.e. two variants), and the winner rule of docs/campaigns.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Interval", "ABTest", "wilson", "lift", "ab_test", "ALPHA", "CONFIDENCE", "MIN_EXPECTED"]

CONFIDENCE = 0.95
ALPHA = 0.05  # a winner needs p below this
MIN_EXPECTED = 5.0  # ... and at least this many expected in every cell of the table


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided interval; `low`/`high` None when it is undefined."""

    value: float | None
    low: float | None
    high: float | None

    def record(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class ABTest:
    """The chi-square test across the variants of a campaign, and its verdict.

    `winner` is set only when p < ALPHA, every expected count is at least MIN_EXPECTED and
    every variant has at least `min_sends` sends; `reason` says why there is none otherwise.
    """

    variants: tuple[str, ...]
    chi2: float | None
    dof: int | None
    p_value: float | None
    min_expected: float | None
    winner: str | None
    reason: str

    def record(self) -> dict:
        return {"variants": list(self.variants), "test": "chi-square", "chi2": self.chi2, "dof": self.dof,
                "p_value": self.p_value, "min_expected": self.min_expected, "alpha": ALPHA,
                "winner": self.winner, "reason": self.reason}


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def wilson(converted: int, sent: int, confidence: float = CONFIDENCE) -> Interval | None:
    """converted / sent with its Wilson score interval; None without sends."""
    from scipy.stats import binomtest

    if sent <= 0:
        return None
    k = min(max(converted, 0), sent)
    ci = binomtest(k, sent).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(k / sent, float(ci.low), float(ci.high))


def lift(converted: int, sent: int, holdout_converted: int, holdout_size: int,
         confidence: float = CONFIDENCE) -> Interval | None:
    """(converted/sent) / (holdout_converted/holdout_size) - 1 with the Katz log interval.

    None when either group is empty or the holdout never converted (the ratio is infinite).
    With no conversion among the treated the lift is -100 % and the interval undefined (the
    log method needs a conversion on both sides).
    """
    from scipy.stats.contingency import relative_risk

    if sent <= 0 or holdout_size <= 0 or holdout_converted <= 0:
        return None
    x1, x0 = min(max(converted, 0), sent), min(holdout_converted, holdout_size)
    if x1 == 0:
        return Interval(-1.0, None, None)
    rr = relative_risk(x1, sent, x0, holdout_size)
    ci = rr.confidence_interval(confidence_level=confidence)
    low, high = _finite(ci.low), _finite(ci.high)
    return Interval(float(rr.relative_risk) - 1.0, None if low is None else low - 1.0,
                    None if high is None else high - 1.0)


def ab_test(groups: Sequence[tuple[str, int, int]], min_sends: int) -> ABTest | None:
    """`groups`: (variant, converted, sent) of each variant; None with fewer than two variants."""
    from scipy.stats import chi2_contingency

    groups = [g for g in groups if g[2] > 0]
    if len(groups) < 2:
        return None
    names = tuple(g[0] for g in groups)
    table = [[min(c, n), n - min(c, n)] for _, c, n in groups]
    if sum(r[0] for r in table) == 0 or sum(r[1] for r in table) == 0:
        what = "no conversion" if sum(r[0] for r in table) == 0 else "every send converted"
        return ABTest(names, None, None, None, 0.0, None, f"{what} in any variant: nothing to compare")
    res = chi2_contingency(table)  # Yates' correction when 2 x 2 (scipy's default)
    chi2, p, dof = float(res.statistic), float(res.pvalue), int(res.dof)
    min_expected = float(res.expected_freq.min())
    rates = {name: c / n for name, c, n in groups}
    best = max(rates.values())
    leaders = sorted(name for name, r in rates.items() if r == best)
    few = sorted((n, name) for name, _, n in groups if n < min_sends)
    if p >= ALPHA:
        reason = f"not significant (p = {p:.3g} >= {ALPHA})"
    elif min_expected < MIN_EXPECTED:
        reason = f"too few conversions to test (an expected count is {min_expected:.1f} < {MIN_EXPECTED:g})"
    elif few:
        reason = f"too few sends: {few[0][1]!s} has {few[0][0]} < --min-sends {min_sends}"
    elif len(leaders) > 1:
        reason = f"tie for the best rate between {', '.join(leaders)}"
    else:
        return ABTest(names, chi2, dof, p, min_expected, leaders[0], f"significant (p = {p:.3g} < {ALPHA})")
    return ABTest(names, chi2, dof, p, min_expected, None, reason)
