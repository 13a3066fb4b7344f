"""Money compared exactly: prices as the decimals people wrote, never binary fractions.

A drop of exactly 10 % must qualify for `min_drop: 10%`. In floating point, 20.00 -> 18.00 is
a drop of 0.09999999999999998; with decimals made from the shortest repr of each JSON
number (what the shop wrote) it is exactly 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["money", "Drop", "parse_drop"]


def money(v: object) -> Decimal | None:
    """A price as an exact decimal (None when not a finite number >= 0)."""
    t = type(v)
    if t is int:
        d = Decimal(v)  # type: ignore[arg-type]
    elif t is float or t is str:
        try:
            d = Decimal(repr(v) if t is float else v.strip())  # type: ignore[union-attr]
        except InvalidOperation:
            return None
    else:
        return None
    if not d.is_finite() or d < 0:
        return None
    return d


@dataclass(frozen=True)
class Drop:
    """`min_drop`: a share of the seen price (`percent`) or an amount in the shop's currency."""

    value: Decimal
    percent: bool

    def met(self, seen: Decimal, new: Decimal) -> bool:
        """Is `new` at least this much below `seen` (and below it at all)?"""
        if new >= seen:
            return False
        if self.percent:
            return (seen - new) * 100 >= self.value * seen
        return seen - new >= self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def parse_drop(v: object) -> Drop | None:
    """`"10%"`, `"12.5%"` (0 < p < 100) or an amount such as `5` or `"4.99"` (> 0); None if neither."""
    if isinstance(v, str) and v.strip().endswith("%"):
        p = money(v.strip()[:-1])
        return Drop(p, True) if p is not None and 0 < p < 100 else None
    if isinstance(v, bool):
        return None
    a = money(v)
    return Drop(a, False) if a is not None and a > 0 else None
