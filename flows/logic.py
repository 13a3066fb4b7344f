"""Bytewax logic objects: thin adapters from `stateful_batch` to the engine in `state/`."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, NamedTuple

from bytewax.operators import StatefulBatchLogic

from state.events import Event
from state.intake import Parsed
from state.campaigns import CampaignEngine
from state.shard import Shard
from state.timeutil import NEVER

from .config import LIVE, FlowConfig
from .observe import IntakeObserver, ShardObserver

__all__ = ["RawBatch", "ShardBatch", "IntakeLogic", "ShardLogic"]


class RawBatch(NamedTuple):
    """What a source emits: raw records of one partition, with their source info."""

    partition: str
    records: list  # [(bytes, position)]: a line number or a Kafka offset
    origin: dict  # where the records come from: {"file": ...} or {"topic", "partition"}
    position_key: str  # "line" or "offset"
    arrival_ms: int  # wall clock when the batch was read
    parsed: Parsed | None = None  # already parsed by a helper process (then `records` is empty)
    tick: tuple[int, int] | None = None  # (k, n): end of a finite input, step k of n towards `until`


class ShardBatch(NamedTuple):
    """Events for one shard plus its partition's event-time frontier."""

    events: list[Event]
    frontier: int
    arrival_ms: int


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class IntakeLogic(StatefulBatchLogic):
    """Per partition: parse and route; the only state is the partition's frontier."""

    def __init__(self, cfg: FlowConfig, frontier: int | None) -> None:
        self.intake = cfg.new_intake(NEVER if frontier is None else frontier)
        self.observer = IntakeObserver() if cfg.mode == LIVE else None
        self.until = cfg.until_ms
        self.end_frontier: int | None = None  # event time when the input ended

    def _tick(self, k: int, n: int) -> None:
        """Move event time k/n of the way from the end of input to `until` (replay only):
        the end of a replay then comes out in n bounded chunks instead of one."""
        if self.end_frontier is None:
            self.end_frontier = self.intake.frontier
        start = self.end_frontier
        if self.until is not None and start != NEVER and self.until > start:
            self.intake.frontier = max(self.intake.frontier, start + (self.until - start) * k // n)

    def on_batch(self, values: list[RawBatch]) -> tuple[list, bool]:
        out: list = []
        for batch in values:
            if batch.tick is not None:
                self._tick(*batch.tick)
                routes, dead = [[] for _ in range(self.intake.shards)], []
            elif batch.parsed is None:
                routes, dead = self.intake.process(batch.records, batch.origin, batch.position_key)
            else:
                routes, dead = self.intake.absorb(batch.parsed)
            out.extend(("dead", d) for d in dead)
            frontier = self.intake.frontier
            for sub, events in enumerate(routes):
                # Every shard of the partition hears the frontier, even with no events.
                out.append(("route", (f"{batch.partition}.{sub}", ShardBatch(events, frontier, batch.arrival_ms))))
        if self.observer is not None:
            self.observer.report(self.intake)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> int:
        return self.intake.frontier


class ShardLogic(StatefulBatchLogic):
    """One shard of contacts; emits `Change`s, and campaign `Message`s/`Decision`s if any."""

    def __init__(self, cfg: FlowConfig, resume: tuple | None) -> None:
        self.cfg = cfg
        self.live = cfg.mode == LIVE
        campaign_state = None
        if resume is None:
            self.shard = Shard(cfg.program, cfg.dedup_horizon)
            self.frontier, self.arrival_ms = NEVER, 0
        else:
            state, self.frontier, self.arrival_ms, *rest = resume
            if rest:
                # Resume the idle clock where the snapshot left it: the time the flow was
                # down is not idle input (its events are still in Kafka), so it must not
                # advance the watermark before the backlog is read.
                self.arrival_ms = wall_ms() - max(0, rest[0] - self.arrival_ms)
            campaign_state = rest[1] if len(rest) > 1 else None
            self.shard = Shard(cfg.program, cfg.dedup_horizon, state)
        self.engine = None if cfg.campaigns is None else CampaignEngine(cfg.campaigns, campaign_state)
        self.observer = ShardObserver(self.shard) if self.live else None

    def _process(self, events: list, watermark: int, flush: bool) -> list:
        """Apply, advance to `watermark`, flush if asked: changes, then campaign outputs."""
        if self.engine is not None:
            changes, outputs = self.engine.process(self.shard, events, watermark,
                                                   now_ms=wall_ms() if self.live else None, flush=flush)
            if self.observer is not None and outputs:
                self.observer.count_outputs(outputs)
            changes.extend(outputs)
            return changes
        out = self.shard.apply(events) if events else []
        out.extend(self.shard.advance(watermark))
        if flush:
            out.extend(self.shard.flush())
        return out

    def watermark(self, now_ms: int | None = None) -> int:
        if not self.live:
            return self.frontier
        if self.frontier == NEVER:
            return NEVER
        idle = max(0, (wall_ms() if now_ms is None else now_ms) - self.arrival_ms)
        return self.frontier - self.cfg.allowed_lateness_ms + idle

    def on_batch(self, values: list[ShardBatch]) -> tuple[list, bool]:
        out: list[Any] = []
        for b in values:
            if b.frontier > self.frontier:
                self.frontier, self.arrival_ms = b.frontier, b.arrival_ms
            done = self._process(b.events, self.watermark(), flush=self.live)
            if self.observer is not None and b.events:
                self.observer.observe_ingest(done, b.arrival_ms)
            out.extend(done)
        self._report()
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list, bool]:
        out = self._process([], self.watermark(), flush=False)
        self._report()
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list, bool]:
        if self.live:
            return [], StatefulBatchLogic.RETAIN
        until = self.cfg.until_ms
        end = max(self.frontier, until if until is not None else NEVER)
        return self._process([], end + 1, flush=True), StatefulBatchLogic.RETAIN  # `until` included

    def _report(self) -> None:
        if self.observer is not None:
            self.observer.report(self.shard, self.watermark())

    def notify_at(self) -> datetime | None:
        if not self.live or self.frontier == NEVER:
            return None
        due = self.shard.next_due()
        if self.engine is not None:
            other = self.engine.next_due()
            due = other if due is None else (due if other is None else min(due, other))
        if due is None:
            return None
        # Wall time at which the idle-advancing watermark passes `due`.
        wall = self.arrival_ms + (due + 1 - (self.frontier - self.cfg.allowed_lateness_ms))
        return datetime.fromtimestamp(max(wall, 0) / 1000, tz=timezone.utc)

    def snapshot(self) -> tuple | None:
        """(state, frontier, arrival wall ms, wall ms of the snapshot[, campaign state]);
        None when nothing keeps snapshots (`FlowConfig.snapshots`), as nothing resumes."""
        if not self.cfg.snapshots:
            return None
        snap = (self.shard.snapshot(), self.frontier, self.arrival_ms, wall_ms())
        return snap if self.engine is None else snap + (self.engine.snapshot(),)

