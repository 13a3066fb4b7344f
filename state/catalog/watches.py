"""Who looked at which product, and at what price: the contact side of catalog triggers.

Indexed by product (a price drop reaches its watchers without scanning contacts) and
bounded per contact: at most MAX_PRODUCTS_PER_CONTACT products, each kept while its latest
view or cart is inside the longest window a trigger needs (`horizon_ms`). An entry is
`(seen_ts, seen_price, cart_ts, order_ts)`: the latest view or cart and the price it showed,
the latest cart, the latest order of the product (NEVER when none).
"""

from __future__ import annotations

from sys import intern

from ..timeutil import NEVER

__all__ = ["Watches", "MAX_PRODUCTS_PER_CONTACT", "VIEW_TYPE", "CART_TYPE", "ORDER_TYPE"]

#: Products remembered per contact; a new one beyond it forgets the least recently seen.
MAX_PRODUCTS_PER_CONTACT = 50
VIEW_TYPE, CART_TYPE, ORDER_TYPE = "product_viewed", "added_to_cart", "order_placed"


class Watches:
    def __init__(self, horizon_ms: int, max_per_contact: int = MAX_PRODUCTS_PER_CONTACT,
                 state: tuple | None = None) -> None:
        self.horizon = horizon_ms
        self.max_per_contact = max_per_contact
        #: product -> {contact: entry}
        self.by_product: dict[str, dict[str, tuple]] = {}
        #: contact -> products it has entries for (for the bound)
        self.by_contact: dict[str, list[str]] = {}
        self.size = 0  # entries held
        if state is not None:
            for pid, rows in state[0].items():
                self.by_product[pid] = dict(rows)
                self.size += len(rows)
            self.by_contact = {cid: list(pids) for cid, pids in state[1].items()}

    def __len__(self) -> int:
        return self.size

    def note(self, cid: str, etype: str, props: dict, ts: int, price_of) -> None:  # type: ignore[no-untyped-def]
        """A contact event: a view or cart of `product_id` (its `price`, else the catalogue's
        price then) or an order (its `items`). Events come in time order per contact."""
        if etype == ORDER_TYPE:
            items = props.get("items")
            if not isinstance(items, list):
                return
            for item in items:
                pid = item.get("product_id") if isinstance(item, dict) else None
                if not isinstance(pid, str) or not pid:
                    continue
                pid = intern(pid)
                rows = self.by_product.get(pid)
                row = rows.get(cid) if rows else None
                if row is None:
                    # kept even without a view: a view of the same millisecond (simultaneous,
                    # whatever the arrival order) is excluded by it; pruned like any entry
                    if rows is None:
                        rows = self.by_product[pid] = {}
                    self._admit(cid, pid, ts)
                    self.size += 1
                    rows[cid] = (NEVER, None, NEVER, ts)
                elif ts > row[3]:
                    rows[cid] = (row[0], row[1], row[2], ts)
            return
        pid = props.get("product_id")
        if not isinstance(pid, str) or not pid:
            return
        pid = intern(pid)  # one string per product, not one per view
        price = props.get("price")
        if price is None or type(price) is bool:
            price = price_of(pid)
        rows = self.by_product.get(pid)
        if rows is None:
            rows = self.by_product[pid] = {}
        row = rows.get(cid)
        if row is None:
            self._admit(cid, pid, ts)
            self.size += 1
            row = (NEVER, None, NEVER, NEVER)
        if ts < row[0]:
            return  # an older view than the one kept (a late event)
        if ts == row[0] and props.get("price") is None:
            price = row[1]  # the price seen at that instant is known (a redelivered view, say)
        rows[cid] = (ts, price, ts if etype == CART_TYPE else row[2], row[3])

    def _admit(self, cid: str, pid: str, ts: int) -> None:
        pids = self.by_contact.get(cid)
        if pids is None:
            self.by_contact[cid] = [pid]
            return
        low = ts - self.horizon
        if len(pids) >= self.max_per_contact:
            # forget what the horizon has passed, else the least recently seen
            keep = [p for p in pids if self.by_product[p][cid][0] > low]
            for p in pids:
                if p not in keep:
                    self._drop(p, cid)
            pids[:] = keep
            if len(pids) >= self.max_per_contact:
                oldest = min(pids, key=lambda p: self.by_product[p][cid][0])
                self._drop(oldest, cid)
                pids.remove(oldest)
        pids.append(pid)

    def _drop(self, pid: str, cid: str) -> None:
        rows = self.by_product[pid]
        del rows[cid]
        self.size -= 1
        if not rows:
            del self.by_product[pid]

    def watchers(self, pid: str, t: int) -> dict[str, tuple]:
        """The product's entries, after forgetting those the horizon has passed at `t`."""
        rows = self.by_product.get(pid)
        if not rows:
            return {}
        low = t - self.horizon
        old = [cid for cid, row in rows.items() if row[0] <= low]
        self.size -= len(old)
        for cid in old:
            del rows[cid]
            pids = self.by_contact[cid]
            pids.remove(pid)
            if not pids:
                del self.by_contact[cid]
        if not rows:
            del self.by_product[pid]
        return rows

    def snapshot(self) -> tuple:
        return ({pid: dict(rows) for pid, rows in self.by_product.items()},
                {cid: list(pids) for cid, pids in self.by_contact.items()})
