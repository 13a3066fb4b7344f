"""Per product, the latest price and inventory; each update compared with the one before.

Every shard keeps the whole book (catalogue updates are broadcast to all shards): a
catalogue is small next to its contacts, and a shard then decides its own contacts'
triggers without asking anyone (docs/architecture.md).
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from ..events import Event
from .money import money

__all__ = ["ProductBook", "Update"]


class Update(NamedTuple):
    """What an update changed; `None` where the product had no price or inventory before."""

    product_id: str
    old_price: Decimal | None
    new_price: Decimal | None
    old_inventory: int | None
    new_inventory: int | None
    properties: dict


_OWN = frozenset(("price", "inventory", "product_id"))


class ProductBook:
    """product id -> (price as written, inventory, attributes); a field an update leaves out is kept.

    `attributes` is the latest update's properties that described the product (title, url,
    ...), kept by reference: every shard of a process shares the one dict of a broadcast update.
    """

    def __init__(self, state: dict | None = None) -> None:
        self.products: dict[str, tuple[object, int | None, dict]] = dict(state) if state else {}

    def describe(self, product_id: str) -> dict:
        """The product as templates see it: its attributes, id, current price and inventory."""
        price, inv, attrs = self.products[product_id]
        out = {k: v for k, v in attrs.items() if k not in _OWN}
        out["product_id"] = product_id
        if price is not None:
            out["price"] = price
        if inv is not None:
            out["inventory"] = inv
        return out

    def price_of(self, product_id: str) -> object:
        row = self.products.get(product_id)
        return None if row is None else row[0]

    def apply(self, ev: Event) -> Update | None:
        """Record the update; what it changed, or None for the product's first update (it fires nothing)."""
        props = ev[4]
        pid = props["product_id"]
        price, inv = props.get("price"), props.get("inventory")
        old = self.products.get(pid)
        describes = not _OWN.issuperset(props)
        if old is None:
            self.products[pid] = (price, inv, props if describes else {})
            return None
        new = (old[0] if price is None else price, old[1] if inv is None else inv, props if describes else old[2])
        self.products[pid] = new
        return Update(pid, money(old[0]) if old[0] is not None else None,
                      money(new[0]) if new[0] is not None else None, old[1], new[1], props)

    def snapshot(self) -> dict:
        return dict(self.products)
