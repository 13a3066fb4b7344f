"""Per catalogue partition: parse raw records, keep the valid updates, track event time."""

from __future__ import annotations

from ..events import DEFAULT_MAX_EVENT_BYTES, FUTURE_TS, Event, Invalid
from ..intake import DeadLetter
from ..timeutil import MAX_TS, NEVER, format_ms
from .events import parse_catalog_event

__all__ = ["CatalogIntake"]


class CatalogIntake:
    """Like `state.intake.Intake` for contact events, without routing: every shard gets every update."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, frontier: int = NEVER) -> None:
        self.max_event_bytes, self.frontier = max_event_bytes, frontier
        self.ts_limit = MAX_TS  # as `Intake.ts_limit`: an update stamped later is a dead letter
        self.invalid: dict[str, int] = {}
        self.consumed = 0

    def process(self, records: list[tuple[bytes, int]], origin: dict,
                position_key: str = "offset") -> tuple[list[Event], list[DeadLetter]]:
        events: list[Event] = []
        dead: list[DeadLetter] = []
        for raw, position in records:
            ev = parse_catalog_event(raw, self.max_event_bytes)
            if type(ev) is Invalid:
                reason, detail = ev.reason, ev.detail
            elif ev.ts > self.ts_limit:
                reason = FUTURE_TS
                detail = (f"ts {format_ms(ev.ts)} is further ahead of the clock than the allowed skew "
                          f"(latest accepted: {format_ms(self.ts_limit)})")
            else:
                if ev.ts > self.frontier:
                    self.frontier = ev.ts
                events.append(ev)
                continue
            dead.append(DeadLetter(reason, detail, {**origin, position_key: position}, bytes(raw)))
            self.invalid[reason] = self.invalid.get(reason, 0) + 1
        self.consumed += len(events)
        return events, dead
