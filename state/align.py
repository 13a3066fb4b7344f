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

Live, a catalogue partition that has nothing more to read (idle since a wall instant) is
settled to the wall clock minus `lateness_ms`: an update is expected to be read within
that of its time. Time is an argument (`now_ms`), as everywhere in `state/`.
"""

from __future__ import annotations

import bisect

from .events import Event
from .timeutil import MAX_TS, NEVER

__all__ = ["Aligner"]


class Aligner:
    def __init__(self, catalog_parts: tuple[str, ...], state: tuple | None = None, *, lateness_ms: int = 0) -> None:
        self.parts = catalog_parts
        self.lateness = lateness_ms
        self.contacts: list[Event] = []
        self.catalog: list[Event] = []
        self.settled: dict[str, int] = {p: NEVER for p in catalog_parts}
        self.idle: dict[str, int | None] = {p: None for p in catalog_parts}  # never restored: said again
        self.late = 0  # updates released behind contact events already released
        self.released_to = NEVER  # latest contact event time released
        #: (contact events, wall ms they were read) in arrival order; `arrival` is the
        #: earliest read time of the contact events the last `release` let through
        self._chunks: list[list[int]] = []
        self.arrival: int | None = None
        if state is not None:
            contacts, catalog, settled = state[:3]
            self.contacts, self.catalog = list(contacts), list(catalog)
            self.settled.update({p: s for p, s in settled.items() if p in self.settled})

    def catalog_settled(self, now_ms: int | None = None) -> int:
        """Every update at or before this instant has been read, on every catalogue partition."""
        out = MAX_TS
        for part, s in self.settled.items():
            idle = self.idle[part]
            if idle is not None and now_ms is not None and now_ms - self.lateness > s:
                s = now_ms - self.lateness
            if s < out:
                out = s
        return out

    def add_contacts(self, events: list[Event], arrival_ms: int | None = None) -> None:
        if events:
            self.contacts.extend(events)
            self._chunks.append([len(events), arrival_ms])

    def add_catalog(self, part: str, events: list[Event], settled: int, idle_since: int | None = None) -> None:
        """`idle_since`: the wall ms since which the partition has nothing more to read (live), else None."""
        for ev in events:
            bisect.insort_right(self.catalog, ev, key=_ts)
        if settled > self.settled.get(part, NEVER):
            self.settled[part] = settled
        self.idle[part] = idle_since

    def release(self, contact_settled: int, now_ms: int | None = None) -> list[Event]:
        """What may be processed now, merged in event time."""
        ks = self.catalog_settled(now_ms)
        contacts, catalog = self.contacts, self.catalog
        out: list[Event] = []
        i = j = 0
        while True:
            e = contacts[i] if i < len(contacts) else None
            c = catalog[j] if j < len(catalog) else None
            if c is not None and (e is None or c[3] < e[3]):
                if c[3] > contact_settled or c[3] - 1 > ks:
                    break  # contact events at or before it, or another partition's earlier update, may come
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
        self.arrival = None
        if i:
            del contacts[:i]
            self._take_chunks(i)
        if j:
            del catalog[:j]
        return out

    def _take_chunks(self, n: int) -> None:
        chunks = self._chunks
        while n > 0 and chunks:
            first = chunks[0]
            if first[1] is not None and (self.arrival is None or first[1] < self.arrival):
                self.arrival = first[1]
            if first[0] <= n:
                n -= first[0]
                chunks.pop(0)
            else:
                first[0] -= n
                n = 0

    def wake_at(self) -> int | None:
        """Wall ms at which the first waiting contact event may go with no new input (live)."""
        if not self.contacts or any(i is None for i in self.idle.values()):
            return None
        return self.contacts[0][3] - 1 + self.lateness

    def bound(self, now_ms: int | None = None) -> int:
        """Time may move (timers fire, contacts settle) strictly before this: not past an event
        still waiting, nor past what the catalogue has settled."""
        b = self.catalog_settled(now_ms)
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
