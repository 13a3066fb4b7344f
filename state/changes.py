"""Segment changes and their wire format for downstream consumers (docs/changes.md)."""

from __future__ import annotations

from typing import NamedTuple

import xxhash

from .timeutil import format_ms

__all__ = ["Change", "change_id", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


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
        """The JSON object written to the segment-changes topic or file."""
        cause = ({"kind": "time"} if self.cause_event_id is None
                 else {"kind": "event", "event_id": self.cause_event_id, "type": self.cause_type})
        return {
            "schema": SCHEMA_VERSION,
            "change_id": change_id(self.contact_id, self.segment_id, self.direction, self.at, self.seq),
            "contact_id": self.contact_id,
            "segment_id": self.segment_id,
            "direction": self.direction,
            "at": format_ms(self.at),
            "seq": self.seq,
            "cause": cause,
            "expires_at": None if self.expires_at is None else format_ms(self.expires_at),
            "late": self.late,
        }
