"""Per input partition: parse raw records, route valid events to shards, track event time.

A contact's events all arrive on one input partition (Kafka key = contact_id), so each
partition's own event-time frontier is what decides when that partition's contacts may
expire: a lagging partition delays only its own contacts, never expires others early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import xxhash

from .events import DEFAULT_MAX_EVENT_BYTES, FUTURE_TS, Event, Invalid, parse_event
from .timeutil import MAX_TS, NEVER, format_ms

__all__ = ["Intake", "Parsed", "DeadLetter", "shard_of"]

_xxh32 = xxhash.xxh32_intdigest


def shard_of(contact_id: str, shards: int) -> int:
    """Stable across processes and versions: a contact's shard must survive restarts."""
    return _xxh32(contact_id.encode()) % shards if shards > 1 else 0


@dataclass
class DeadLetter:
    """An input record that was not a valid event, with why and where it came from."""

    reason: str
    detail: str
    source: dict
    raw: bytes

    def record(self) -> dict:
        return {"reason": self.reason, "detail": self.detail, "source": self.source,
                "raw": self.raw.decode("utf-8", "replace")}


class Parsed(NamedTuple):
    """A batch parsed away from its partition's `Intake` (in a helper process), to absorb.

    Events are plain tuples in `Event` field order: they cross a process boundary, and a
    plain tuple unpickles about 3x faster than a NamedTuple.
    """

    routes: list  # per shard, [(event_id, contact_id, type, ts, properties)]
    dead: list  # [DeadLetter]
    frontier: int  # max event time of the batch, NEVER if none
    consumed: dict  # valid events by type
    invalid: dict  # dead letters by reason
    ignored: int  # valid events of types no shard uses


class Intake:
    """Parsing state of one partition: only its event-time frontier (max event time seen)."""

    def __init__(self, shards: int, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, frontier: int = NEVER,
                 wanted: frozenset[str] | None = None) -> None:
        """`wanted`: the event types the shards use; others are validated, move the
        frontier and are counted as `ignored`, but never routed (None: route all)."""
        if shards < 1:
            raise ValueError(f"shards per partition must be >= 1: {shards}")
        self.shards, self.max_event_bytes, self.frontier = shards, max_event_bytes, frontier
        self.wanted = wanted
        #: Latest acceptable event time: an event stamped later (a device clock far ahead)
        #: is a dead letter `future_ts` and never moves the frontier. Set per batch (live) or once.
        self.ts_limit = MAX_TS
        self.invalid: dict[str, int] = {}
        self.consumed: dict[str, int] = {}  # valid events by type
        self.ignored = 0  # valid events of types no shard uses

    def process(self, records: list[tuple[bytes, int]], origin: dict,
                position_key: str = "offset") -> tuple[list[list[Event]], list[DeadLetter]]:
        """`records` are (raw bytes, position); a dead letter's source is `origin` + position."""
        routes: list[list[Event]] = [[] for _ in range(self.shards)]
        dead: list[DeadLetter] = []
        frontier, shards, limit, consumed = self.frontier, self.shards, self.max_event_bytes, self.consumed
        wanted, ignored, ts_limit = self.wanted, 0, self.ts_limit
        for raw, position in records:
            ev = parse_event(raw, limit)
            if type(ev) is Invalid:
                dead.append(DeadLetter(ev.reason, ev.detail, {**origin, position_key: position}, bytes(raw)))
                self.invalid[ev.reason] = self.invalid.get(ev.reason, 0) + 1
                continue
            if ev.ts > frontier:
                if ev.ts > ts_limit:
                    dead.append(DeadLetter(FUTURE_TS, f"ts {format_ms(ev.ts)} is further ahead of the clock than "
                                           f"the allowed skew (latest accepted: {format_ms(ts_limit)})",
                                           {**origin, position_key: position}, bytes(raw)))
                    self.invalid[FUTURE_TS] = self.invalid.get(FUTURE_TS, 0) + 1
                    continue
                frontier = ev.ts
            consumed[ev.type] = consumed.get(ev.type, 0) + 1
            if wanted is not None and ev.type not in wanted:
                ignored += 1
                continue
            routes[_xxh32(ev.contact_id.encode()) % shards if shards > 1 else 0].append(ev)
        self.frontier = frontier
        self.ignored += ignored
        return routes, dead

    def parse(self, records: list[tuple[bytes, int]], origin: dict, position_key: str = "offset") -> Parsed:
        """`process` for a helper process: the batch alone, counts not kept here."""
        self.frontier, self.invalid, self.consumed, self.ignored = NEVER, {}, {}, 0
        routes, dead = self.process(records, origin, position_key)  # same `ts_limit` in both processes
        return Parsed([[tuple(e) for e in r] for r in routes], dead, self.frontier, self.consumed, self.invalid,
                      self.ignored)

    def absorb(self, parsed: Parsed) -> tuple[list[list[Event]], list[DeadLetter]]:
        """What `process` would have returned and done for the batch `parsed` was made of."""
        if parsed.frontier > self.frontier:
            self.frontier = parsed.frontier
        self.ignored += parsed.ignored
        for counts, delta in ((self.consumed, parsed.consumed), (self.invalid, parsed.invalid)):
            for k, n in delta.items():
                counts[k] = counts.get(k, 0) + n
        return parsed.routes, parsed.dead
