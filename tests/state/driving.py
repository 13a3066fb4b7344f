"""Driving a shard through a stream in batches, as the flows do (shared by the state tests)."""

from __future__ import annotations

from state.events import Event
from state.shard import Shard


def drive(shard: Shard, events: list[Event], step: int = 200) -> list:
    """Apply `events` `step` at a time, each batch followed by `advance` to its last event time."""
    out = []
    for i in range(0, len(events), step):
        batch = events[i:i + step]
        out += shard.apply(batch)
        out += shard.advance(batch[-1].ts)
    return out
