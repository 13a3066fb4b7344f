"""The three catalog triggers (SPEC "Catalog triggers"): when an update fires, and for whom.

At an update at `t` (every contact event at or before `t` applied first):
- `price_drop`: the price goes down; a watcher whose latest view or cart is within
  `within_ms` (`t - W < seen <= t`) and whose seen price is at least `drop` above the new one;
- `back_in_stock`: inventory 0 -> above 0; a watcher whose latest view or cart is within;
- `low_stock`: inventory from `>= below` to 1..below-1; a watcher whose latest cart is within.
Never a watcher with an order of the product at or after that view or cart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .book import Update
from .money import Drop, money

__all__ = ["CatalogTrigger", "qualifies", "KINDS"]

KINDS = ("price_drop", "back_in_stock", "low_stock")


@dataclass(frozen=True)
class CatalogTrigger:
    kind: str
    within_ms: int
    drop: Drop | None = None  # price_drop
    below: int = 0  # low_stock

    def fires(self, u: Update) -> bool:
        """Does the update itself qualify (before looking at anyone)?"""
        if self.kind == "price_drop":
            return u.old_price is not None and u.new_price is not None and u.new_price < u.old_price
        if self.kind == "back_in_stock":
            return u.old_inventory == 0 and u.new_inventory is not None and u.new_inventory > 0
        return (u.old_inventory is not None and u.old_inventory >= self.below and u.new_inventory is not None
                and 1 <= u.new_inventory <= self.below - 1)


def matcher(trig: CatalogTrigger, u: Update, t: int):  # type: ignore[no-untyped-def]
    """`qualifies(trig, u, row, t)` as a function of the row, for the many watchers of one
    update: the window bounds computed once, each seen price made exact once (most watchers
    of a product saw one of a few prices)."""
    low = t - trig.within_ms
    cart = trig.kind == "low_stock"
    if trig.kind != "price_drop":
        def check(row: tuple) -> bool:
            since = row[2] if cart else row[0]
            return low < since <= t and row[3] < since
        return check
    drop, new = trig.drop, u.new_price
    met: dict = {}

    def check_drop(row: tuple) -> bool:
        since = row[0]
        if not low < since <= t or row[3] >= since:
            return False
        seen = row[1]
        key = (type(seen), seen)
        ok = met.get(key)
        if ok is None:
            value = money(seen) if seen is not None and type(seen) is not bool else None
            ok = met[key] = value is not None and drop.met(value, new)  # type: ignore[union-attr,arg-type]
        return ok
    return check_drop


def qualifies(trig: CatalogTrigger, u: Update, row: tuple, t: int) -> bool:
    """Is the watcher's entry `(seen_ts, seen_price, cart_ts, order_ts)` notified of `u` at `t`?"""
    since = row[2] if trig.kind == "low_stock" else row[0]
    if not t - trig.within_ms < since <= t or row[3] >= since:
        return False
    if trig.kind != "price_drop":
        return True
    seen = money(row[1]) if row[1] is not None and type(row[1]) is not bool else None
    return seen is not None and trig.drop.met(seen, u.new_price)  # type: ignore[union-attr,arg-type]
