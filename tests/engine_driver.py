"""Drive a `Shard` the way the flow does, with chosen batch boundaries (no Bytewax)."""

from __future__ import annotations

from state.changes import Change
from state.events import Event
from state.program import Program
from state.shard import Shard


def run_shard(program: Program, events: list[Event], until: int, cuts: list[int] = (),
              horizon: int = 1 << 16, live: bool = False) -> list[Change]:
    """Apply `events` in batches split at `cuts` (indexes), then let time run to `until`."""
    shard = Shard(program, horizon)
    out: list[Change] = []
    bounds = sorted({0, len(events), *[c for c in cuts if 0 < c < len(events)]})
    frontier = None
    for lo, hi in zip(bounds, bounds[1:]):
        batch = events[lo:hi]
        out.extend(shard.apply(batch))
        top = max(e.ts for e in batch)
        frontier = top if frontier is None else max(frontier, top)
        out.extend(shard.advance(frontier))
        if live:
            out.extend(shard.flush())
    end = max([until] + ([frontier] if frontier is not None else []))
    out.extend(shard.advance(end + 1))
    out.extend(shard.flush())
    return out


def as_tuples(changes: list[Change]) -> list[tuple[str, str, str, int]]:
    return sorted((c.contact_id, c.segment_id, c.direction, c.at) for c in changes)
