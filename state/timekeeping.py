"""When may a live flow decide? Event time per input partition, and the two bounds it gives.

A keyed partition keeps each contact's events in order, so what has been *read* on a
partition tells a shard what is final:

- `settled`: every event at or before this instant has been read. It is the latest event
  time read minus 1 ms, or that time itself once the partition is caught up (nothing more
  to read at the last fetch). Contacts whose events are settled are evaluated at once:
  the events of one millisecond are never split, whatever the poll boundaries.
- `watermark`: time-driven changes (a window closing) strictly before it are emitted. It
  trails the latest event time by the allowed lateness, so an event of another contact
  arriving up to that much out of order still counts; while the partition is caught up it
  moves on with the wall clock (quiet hours still close windows). It never goes back:
  what was emitted stays emitted.

Replay reads a file in event-time order: settled = frontier - 1 and watermark = frontier,
so live and replay evaluate the same contacts at the same instants.
"""

from __future__ import annotations

from typing import NamedTuple

from .timeutil import NEVER

__all__ = ["PartitionTime", "PartitionClock", "ShardClock"]


class PartitionTime(NamedTuple):
    """What a partition tells its shards after each batch."""

    frontier: int  # latest event time read (NEVER: none yet)
    settled: int  # every event at or before this instant has been read
    idle_since: int | None  # wall ms since which the partition is caught up at `frontier`


class PartitionClock:
    """Per input partition: turns (frontier, caught up?, wall time) into a `PartitionTime`."""

    def __init__(self) -> None:
        self.frontier = NEVER
        self.idle_since: int | None = None

    def observe(self, frontier: int, caught_up: bool, wall_ms: int) -> PartitionTime:
        if not caught_up:
            self.idle_since = None
        elif self.idle_since is None or frontier > self.frontier:
            self.idle_since = wall_ms
        self.frontier = frontier
        if frontier == NEVER:
            return PartitionTime(NEVER, NEVER, self.idle_since)
        return PartitionTime(frontier, frontier if caught_up else frontier - 1, self.idle_since)


class ShardClock:
    """A shard's view of its partition's time; `live=False` is replay's (no lateness, no wall clock)."""

    def __init__(self, lateness_ms: int, live: bool, state: tuple | None = None) -> None:
        self.lateness, self.live = lateness_ms, live
        self.idle_since: int | None = None  # never restored: caught up again only once the source says so
        if state is None:
            self.frontier = self.settled = self.floor = NEVER
        else:
            self.frontier, self.settled, self.floor = state

    def update(self, t: PartitionTime) -> None:
        if t.frontier > self.frontier:
            self.frontier = t.frontier
        if t.settled > self.settled:
            self.settled = t.settled
        self.idle_since = t.idle_since

    def watermark(self, now_ms: int) -> int:
        """Timers strictly before this instant are due; monotone."""
        if not self.live:
            return self.frontier
        if self.frontier == NEVER:
            return self.floor
        w = self.frontier - self.lateness
        if self.idle_since is not None:
            w += max(0, now_ms - self.idle_since)
        if w > self.floor:
            self.floor = w
        return self.floor

    def wake_at(self, due: int) -> int | None:
        """Wall ms at which the watermark passes `due` with no new input (None: only input moves it)."""
        if not self.live or self.idle_since is None or self.frontier == NEVER:
            return None
        return self.idle_since + (due + 1 - (self.frontier - self.lateness))

    def snapshot(self) -> tuple:
        return (self.frontier, self.settled, self.floor)
