"""Segment changes and their wire format for downstream consumers (docs/changes.md)."""

from __future__ import annotations

from typing import NamedTuple

import xxhash

from .timeutil import format_ms

__all__ = ["Change", "change_id", "SCHEMA_VERSION", "DEFINITION_CHANGED"]

SCHEMA_VERSION = 1
#: `cause_type` of a change written because the segment's definition changed (state/migrate.py).
DEFINITION_CHANGED = "definition_changed"


def change_id(contact_id: str, segment_id: str, direction: str, at: int, seq: int) -> str:
    """Same input, same id: a consumer drops a repeated change by this id alone."""
    key = f"{contact_id}\x1f{segment_id}\x1f{direction}\x1f{at}\x1f{seq}".encode()
    return xxhash.xxh3_128_hexdigest(key)


class Change(NamedTuple):
    """A contact entered or left a segment at event time `at` (epoch ms)."""

    contact_id: str
    segment_id: str
    direction: str  # "enter" | "exit"
    at: int
    seq: int
    cause_event_id: str | None  # None: caused by time (a window boundary)
    cause_type: str | None
    expires_at: int | None
    late: bool

    def record(self) -> dict:
        """The JSON object written to the segment-changes topic or file (once per change, hot)."""
        cid, sid, direction, at, seq, event_id, etype, expires_at, late = self
        return {
            "schema": SCHEMA_VERSION,
            "change_id": change_id(cid, sid, direction, at, seq),
            "contact_id": cid,
            "segment_id": sid,
            "direction": direction,
            "at": format_ms(at),
            "seq": seq,
            "cause": ({"kind": "event", "event_id": event_id, "type": etype} if event_id is not None
                      else {"kind": "time"} if etype is None else {"kind": etype}),
            "expires_at": None if expires_at is None else format_ms(expires_at),
            "late": late,
        }
