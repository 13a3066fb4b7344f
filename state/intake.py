"""Per input partition: parse raw records, route valid events to shards, track event time.

A contact's events all arrive on one input partition (Kafka key = contact_id), so each
partition's own event-time frontier is what decides when that partition's contacts may
expire: a lagging partition delays only its own contacts, never expires others early.
"""

from __future__ import annotations

from dataclasses import dataclass
import xxhash

from .events import DEFAULT_MAX_EVENT_BYTES, Event, Invalid, parse_event
from .timeutil import NEVER

__all__ = ["Intake", "DeadLetter", "shard_of"]

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


class Intake:
    """Parsing state of one partition: only its event-time frontier (max event time seen)."""

    def __init__(self, shards: int, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, frontier: int = NEVER) -> None:
        if shards < 1:
            raise ValueError(f"shards per partition must be >= 1: {shards}")
        self.shards, self.max_event_bytes, self.frontier = shards, max_event_bytes, frontier
        self.invalid: dict[str, int] = {}
        self.consumed: dict[str, int] = {}  # valid events by type

    def process(self, records: list[tuple[bytes, int]], origin: dict,
                position_key: str = "offset") -> tuple[list[list[Event]], list[DeadLetter]]:
        """`records` are (raw bytes, position); a dead letter's source is `origin` + position."""
        routes: list[list[Event]] = [[] for _ in range(self.shards)]
        dead: list[DeadLetter] = []
        frontier, shards, limit, consumed = self.frontier, self.shards, self.max_event_bytes, self.consumed
        for raw, position in records:
            ev = parse_event(raw, limit)
            if type(ev) is Invalid:
                dead.append(DeadLetter(ev.reason, ev.detail, {**origin, position_key: position}, bytes(raw)))
                self.invalid[ev.reason] = self.invalid.get(ev.reason, 0) + 1
                continue
            consumed[ev.type] = consumed.get(ev.type, 0) + 1
            if ev.ts > frontier:
                frontier = ev.ts
            routes[_xxh32(ev.contact_id.encode()) % shards if shards > 1 else 0].append(ev)
        self.frontier = frontier
        return routes, dead
