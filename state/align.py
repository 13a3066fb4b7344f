"""Event-time alignment of a shard's contact events with the catalogue updates.

A catalog trigger is exact only if an update at `t` meets every contact event at or before
`t` and none after (SPEC "Catalog triggers"; live = replay). The two inputs are read
independently (two topics, or two files in replay), so each shard merges them:

- a contact event at `e` is released once every catalogue update before `e` has been read
  (`catalog_settled >= e - 1`), after those updates;
- an update at `c` is released once every contact event at or before `c` has been read on
  the shard's partition (`contact_settled >= c`), after those events.

So at one instant contact events come first, then updates, whatever the read order.
Contact events keep their arrival order (a late event stays late); updates are ordered
by time (stable). `bound()` says how far time may move while something waits.
"""

from __future__ import annotations

import bisect

from .events import Event
from .timeutil import MAX_TS, NEVER

__all__ = ["Aligner"]


class Aligner:
    def __init__(self, catalog_parts: tuple[str, ...], state: tuple | None = None) -> None:
        self.parts = catalog_parts
        self.contacts: list[Event] = []
        self.catalog: list[Event] = []
        self.settled: dict[str, int] = {p: NEVER for p in catalog_parts}
        self.late = 0  # updates released behind contact events already released
        self.released_to = NEVER  # latest contact event time released
        if state is not None:
            contacts, catalog, settled = state[:3]
            self.contacts, self.catalog = list(contacts), list(catalog)
            self.settled.update({p: s for p, s in settled.items() if p in self.settled})

    def catalog_settled(self) -> int:
        """Every update at or before this instant has been read, on every catalogue partition."""
        return min(self.settled.values(), default=MAX_TS)

    def add_contacts(self, events: list[Event]) -> None:
        self.contacts.extend(events)

    def add_catalog(self, part: str, events: list[Event], settled: int) -> None:
        for ev in events:
            bisect.insort_right(self.catalog, ev, key=_ts)
        if settled > self.settled.get(part, NEVER):
            self.settled[part] = settled

    def release(self, contact_settled: int) -> list[Event]:
        """What may be processed now, merged in event time."""
        ks = self.catalog_settled()
        contacts, catalog = self.contacts, self.catalog
        out: list[Event] = []
        i = j = 0
        while True:
            e = contacts[i] if i < len(contacts) else None
            c = catalog[j] if j < len(catalog) else None
            if c is not None and (e is None or c[3] < e[3]):
                if c[3] > contact_settled:
                    break
                if c[3] < self.released_to:
                    self.late += 1
                out.append(c)
                j += 1
            elif e is not None:
                if e[3] - 1 > ks:
                    break
                out.append(e)
                if e[3] > self.released_to:
                    self.released_to = e[3]
                i += 1
            else:
                break
        if i:
            del contacts[:i]
        if j:
            del catalog[:j]
        return out

    def bound(self) -> int:
        """Time may move (timers fire, contacts settle) strictly before this: not past an event
        still waiting, nor past what the catalogue has settled."""
        b = self.catalog_settled()
        b = MAX_TS if b >= MAX_TS else b + 1
        if self.contacts and self.contacts[0][3] < b:
            b = self.contacts[0][3]
        if self.catalog and self.catalog[0][3] < b:
            b = self.catalog[0][3]
        return b

    def waiting(self) -> int:
        return len(self.contacts) + len(self.catalog)

    def snapshot(self) -> tuple:
        return (list(self.contacts), list(self.catalog), dict(self.settled))


def _ts(ev: Event) -> int:
    return ev[3]
