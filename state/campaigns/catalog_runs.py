"""Catalog triggers in the engine: a product update becomes, for each watcher it qualifies,
a trigger in that contact's inbox at the update's instant.

The product side (book, watches, rules) is `state/catalog/`. The update is met in the
batch after every contact event at or before its instant (the flow aligns the two inputs,
docs/architecture.md), so the watches read are those at the update's instant; the run then
starts at the contact's own instant, through the same policies as every other run.
"""

from __future__ import annotations

from ..catalog import ProductBook, Watches, matcher
from ..events import Event
from ..shard import Shard
from .ids import run_id, value_hash, value_hashes
from .policies import Memo
from .runs import DATE_STEP

__all__ = ["CatalogRuns", "CATALOG_RUN"]

#: Type of the per-contact inbox entry a qualifying update leaves (never a contact event's type).
CATALOG_RUN = "\x00catalog"
_new = tuple.__new__


class CatalogRuns:
    """Part of `CampaignEngine`: the product book, the watches and catalog-triggered runs."""

    book: ProductBook
    watches: Watches | None
    #: campaign index -> runs started by updates, since a metrics reader last drained it
    catalog_counts: dict[int, int]

    def _on_catalog(self, ev: Event) -> None:
        """A product update (already de-duplicated): record it, leave a trigger for each qualifying watcher."""
        u = self.book.apply(ev)
        self.stats["catalog_updates"] = self.stats.get("catalog_updates", 0) + 1
        if u is None or self.watches is None:
            return
        firing = [k for k in self._catalog if self.camps[k].catalog.fires(u)]  # type: ignore[union-attr]
        if not firing:
            return
        t = ev[3]
        rows = self.watches.watchers(u.product_id, t)
        if not rows:
            return
        inbox, counts = self.inbox, self.catalog_counts
        base = self.book.describe(u.product_id)  # one per update: each run copies it when it starts
        checks = [(k, matcher(self.camps[k].catalog, u, t)) for k in firing]  # type: ignore[arg-type]
        eid = ev[0]
        for cid, row in rows.items():
            for k, check in checks:
                if check(row):
                    box = inbox.get(cid)
                    entry = _new(Event, (eid, cid, CATALOG_RUN, t, (k, base, row[1])))
                    if box is None:
                        inbox[cid] = [entry]
                    else:
                        box.append(entry)
                    counts[k] = counts.get(k, 0) + 1

    def _note_watch(self, ev: Event) -> None:
        self.watches.note(ev[1], ev[2], ev[4], ev[3], self.book.price_of)  # type: ignore[union-attr]

    def _start_catalog(self, cid: str, t: int, ev: Event, memo: Memo, row: int | None, shard: Shard,
                       out: list) -> None:
        k, base, seen = ev[4]
        c = self.camps[k]
        product = dict(base)
        if seen is not None:
            product["previous_price"] = seen
        pid = product["product_id"]
        key = value_hash(pid) or 0
        runs = self.runs
        key_col, camp_col, step_col, nxt = runs.key, runs.camp, runs.step, runs.nxt
        s = runs.heads.get(cid, -1)
        while s >= 0:
            if key_col[s] == key and camp_col[s] == k and step_col[s] != DATE_STEP:
                return  # this product's run is open: the update is part of it
            s = nxt[s]
        paths = self._match_paths[k]
        matchsets = {p: frozenset(value_hashes(product, p)) for p in paths} if paths else None
        # a catalog run always keeps its product: the templates' `products`, and what re-entry counts per
        self._start(k, cid, t, run_id(cid, c.id, ev[0]), (matchsets, [product]), memo, row, shard, out, key,
                    fired_key=fired_key(c.id, pid))


def fired_key(camp_id: str, product_id: str) -> str:
    """Re-entry of a catalog campaign counts per product: its `Memo.fired` key."""
    return f"{camp_id}\x1f{product_id}"


def campaign_of_key(key: str) -> str:
    return key.split("\x1f", 1)[0] if "\x1f" in key else key
