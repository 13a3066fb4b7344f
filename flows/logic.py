"""Bytewax logic objects: thin adapters from `stateful_batch` to the engine in `state/`."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any, NamedTuple

from bytewax.operators import StatefulBatchLogic

from state.align import Aligner
from state.catalog.intake import CatalogIntake
from state.events import Event
from state.campaigns import CampaignEngine
from state.blobs import pack, pack_state, unpack, unpack_state
from state.errors import RuntimeFailure
from state.shard import Shard, ShardDelta, apply_delta
from state.timekeeping import PartitionClock, PartitionTime, ShardClock
from connectors.batch import RawBatch
from state.timeutil import MAX_TS, NEVER, wall_ms

from .config import LIVE, FlowConfig
from .observe import IntakeObserver, ShardObserver

__all__ = ["ShardBatch", "IntakeLogic", "CatalogIntakeLogic", "ShardLogic", "BaseItem", "BaseLogic", "SNAPSHOT_V2",
           "SNAPSHOT_V3"]


class ShardBatch(NamedTuple):
    """Events for one shard plus what its partition has read (state/timekeeping.py)."""

    events: list[Event]
    time: PartitionTime
    arrival_ms: int
    catalog: str | None = None  # the catalogue partition it comes from; None: the shard's own partition


class IntakeLogic(StatefulBatchLogic):
    """Per partition: parse and route; the only state is the partition's frontier."""

    def __init__(self, cfg: FlowConfig, frontier: int | None) -> None:
        self.intake = cfg.new_intake(NEVER if frontier is None else frontier)
        self.live = cfg.mode == LIVE
        self.observer = IntakeObserver(cfg.live_metrics()) if self.live else None
        self.until = cfg.until_ms
        self.skew = cfg.max_clock_skew_ms
        self.clock = PartitionClock()
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
                if self.live:
                    # A device clock far ahead must not move time for the whole partition.
                    self.intake.ts_limit = batch.arrival_ms + self.skew
                routes, dead = self.intake.process(batch.records, batch.origin, batch.position_key)
            else:
                routes, dead = self.intake.absorb(batch.parsed)
            out.extend(("dead", d) for d in dead)
            now = self.clock.observe(self.intake.frontier, batch.caught_up, batch.arrival_ms)
            for sub, events in enumerate(routes):
                # Every shard of the partition hears its time, even with no events.
                out.append(("route", (f"{batch.partition}.{sub}", ShardBatch(events, now, batch.arrival_ms))))
        if self.observer is not None:
            self.observer.report(self.intake)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> int:
        return self.intake.frontier


class CatalogIntakeLogic(StatefulBatchLogic):
    """Per catalogue partition: parse; every shard hears every update and the partition's time.

    `settled` tells shards how far their contact events may go (state/align.py): the last
    update time read minus 1 ms while reading; once caught up, the wall clock minus the
    catalogue lateness (live: `idle_since` goes along); once a replay's file is read, the end of time.
    """

    def __init__(self, cfg: FlowConfig, frontier: int | None) -> None:
        self.intake = CatalogIntake(cfg.max_event_bytes, NEVER if frontier is None else frontier)
        self.live = cfg.mode == LIVE
        self.keys = cfg.shard_keys()
        self.skew = cfg.max_clock_skew_ms
        self.ended = False
        self.metrics = cfg.live_metrics() if self.live else None
        if not self.live and cfg.until_ms is not None:
            self.intake.ts_limit = cfg.until_ms + cfg.max_clock_skew_ms

    def on_batch(self, values: list[RawBatch]) -> tuple[list, bool]:
        out: list = []
        for batch in values:
            if batch.tick is not None:
                self.ended = True  # a finite input is read: no update comes after
                events: list = []
                dead: list = []
            else:
                if self.live:
                    self.intake.ts_limit = batch.arrival_ms + self.skew
                events, dead = self.intake.process(batch.records, batch.origin, batch.position_key)
                if self.metrics is not None and events:
                    self.metrics.on_catalog_updates(len(events))
            out.extend(("dead", d) for d in dead)
            f = self.intake.frontier
            idle = batch.arrival_ms if batch.caught_up and self.live and not self.ended else None
            if self.ended:
                settled = MAX_TS
            elif idle is not None:
                settled = f  # and on with the wall clock, minus the catalogue lateness (state/align.py)
            else:
                settled = f - 1 if f != NEVER else NEVER
            now = PartitionTime(f, settled, idle)
            for key in self.keys:
                out.append(("route", (key, ShardBatch(events, now, batch.arrival_ms, batch.partition))))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> int:
        return self.intake.frontier


class ShardLogic(StatefulBatchLogic):
    """One shard of contacts; emits `Change`s, and campaign `Message`s/`Decision`s if any."""

    def __init__(self, cfg: FlowConfig, resume: tuple | bytes | None) -> None:
        self.cfg = cfg
        self.live = cfg.mode == LIVE
        #: The whole state written last (`BaseItem`, kept by the `bases` step); snapshots carry
        #: only what changed since. None: no base yet (the next batch writes one).
        self.base_id: str | None = None
        self._compact = False  # the changes since the base grew large: write a new base
        self._awaiting: tuple | None = None  # a v3 resume waiting for its base (`_ready`)
        self._waiting: list = []  # input that arrived before the base
        self._since = time.monotonic()
        state = campaign_state = clock_state = aligner_state = None
        if isinstance(resume, bytes):  # pickled by `snapshot` itself (its size is measured)
            resume = unpack(resume)
        if resume is not None and resume[0] == SNAPSHOT_V3:
            _, base_id, part, clock_state, campaign_state, aligner_state, waiting = resume
            self._waiting = list(waiting)
            if base_id is not None:  # the base comes from the `bases` step's own resume
                self._awaiting = (base_id, part, clock_state, campaign_state, aligner_state)
                return
            state = part
        elif resume is not None and resume[0] == SNAPSHOT_V2:
            _, state, clock_state, campaign_state = resume[:4]
            aligner_state = resume[4] if len(resume) > 4 else None
        elif resume is not None:
            # Before v2: (state, frontier, arrival ms, wall ms[, campaign state]).
            state, frontier = resume[0], resume[1]
            clock_state = (frontier, frontier - 1, frontier - cfg.allowed_lateness_ms)
            campaign_state = resume[4] if len(resume) > 4 else None
        self._build(state, clock_state, campaign_state, aligner_state)

    def _build(self, state: Any, clock_state: Any, campaign_state: Any, aligner_state: Any,
               delta: ShardDelta | None = None) -> None:
        cfg = self.cfg
        # Restored state made with other definitions switches at the instant time had reached
        # (state/migrate.py); what that writes goes out with the first output.
        switch_at = None if clock_state is None or clock_state[2] == NEVER else clock_state[2]
        self.shard = Shard(cfg.program, cfg.dedup_horizon, state, switch_at=switch_at)
        self.switched: list = list(self.shard.migrated)
        if delta is not None and self.shard.migration is None:  # still the changes since that base
            self.shard.track_since(delta.base_rows, delta.rows)
        else:
            self.base_id = None
        self.clock = ShardClock(cfg.allowed_lateness_ms, self.live, clock_state)
        self.engine = None if cfg.campaigns is None else CampaignEngine(cfg.campaigns, campaign_state,
                                                                       catalog=bool(cfg.catalog_parts))
        if self.engine is not None and self.live:
            self.engine.sweep_limit = SWEEP_LIMIT
        self.observer = ShardObserver(self.shard, cfg.live_metrics(), self.engine) if self.live else None
        #: With a catalogue input, contact events and updates meet in event time (state/align.py).
        self.aligner = (Aligner(cfg.catalog_parts, aligner_state, lateness_ms=cfg.catalog_lateness_ms)
                        if cfg.catalog_parts else None)

    def _ready(self) -> bool:
        """Whether the shard is built: a v3 resume needs its base, which the `bases` step's
        resume hands over in this process (the same key is on the same worker in both steps)."""
        if self._awaiting is None:
            return True
        base_id, delta, clock_state, campaign_state, aligner_state = self._awaiting
        blob = RESTORED.pop(base_id, None)
        if blob is None:
            if time.monotonic() - self._since > BASE_WAIT_S:
                raise RuntimeFailure(f"a shard's base snapshot {base_id} was not restored within {BASE_WAIT_S:.0f}s: "
                                     "the recovery partitions are incomplete (restore all part-*.sqlite3 files "
                                     "together) or were written by another dataflow")
            return False
        self._awaiting = None
        self.base_id = base_id
        self._build(apply_delta(unpack_state(blob), delta), clock_state, campaign_state, aligner_state, delta)
        return True

    def _base(self) -> list:
        """A new base when there is none yet or the changes since it grew large (snapshots on)."""
        if not self.cfg.snapshots or (self.base_id is not None and not self._compact):
            return []
        start = time.perf_counter()
        blob = pack_state(self.shard.snapshot(copy=False))
        self.shard.mark_base()
        self.base_id, self._compact = uuid.uuid4().hex, False
        if self.observer is not None:
            self.observer.m.on_snapshot(time.perf_counter() - start, len(blob))
        return [BaseItem(self.base_id, blob)]

    def _process(self, events: list, watermark: int, settled: int | None) -> list:
        """Apply, settle what is final, fire timers before `watermark`: changes, then campaign outputs."""
        if self.engine is not None:
            changes, outputs = self.engine.process(self.shard, events, watermark,
                                                   now_ms=wall_ms() if self.live else None, settled=settled)
            if self.observer is not None and outputs:
                self.observer.count_outputs(outputs)
            changes.extend(outputs)
            return changes
        out = self.shard.apply(events) if events else []
        out.extend(self.shard.advance(watermark, settled))
        return out

    def on_batch(self, values: list[ShardBatch]) -> tuple[list, bool]:
        if not self._ready():
            self._waiting.extend(values)
            return [], StatefulBatchLogic.RETAIN
        if self._waiting:
            values, self._waiting = self._waiting + values, []
        out, retain = self._on_batch(values)
        return out + self._base(), retain

    def _on_batch(self, values: list[ShardBatch]) -> tuple[list, bool]:
        if self.switched:
            out, self.switched = self.switched, []
            more, retain = self._on_batch(values)
            return out + more, retain
        if self.aligner is not None:
            return self._aligned_batch(values)
        out: list[Any] = []
        clock = self.clock
        for b in values:
            clock.update(b.time)
            done = self._process(b.events, clock.watermark(wall_ms()), clock.settled)
            if self.observer is not None and b.events:
                self.observer.observe_ingest(done, b.arrival_ms)
            out.extend(done)
        self._report()
        return out, StatefulBatchLogic.RETAIN

    def _aligned_batch(self, values: list[ShardBatch]) -> tuple[list, bool]:
        aligner = self.aligner
        assert aligner is not None
        for b in values:
            if b.catalog is None:
                self.clock.update(b.time)
                aligner.add_contacts(b.events, b.arrival_ms)
            else:
                aligner.add_catalog(b.catalog, b.events, b.time.settled, b.time.idle_since)
        out = self._release()
        self._report()
        return out, StatefulBatchLogic.RETAIN

    def _release(self, end: int | None = None) -> list:
        """Process what the aligner lets through; time moves up to what still waits."""
        aligner = self.aligner
        assert aligner is not None
        wall = wall_ms()
        now = wall if self.live else None
        if end is not None:
            watermark, settled = end + 1, end
        else:
            watermark, settled = self.clock.watermark(wall), self.clock.settled
        events = aligner.release(max(settled, watermark - 1), now)
        bound = aligner.bound(now)
        out = self._process(events, min(watermark, bound), min(settled, bound - 1))
        if self.observer is not None and aligner.arrival is not None:
            self.observer.observe_ingest(out, aligner.arrival)
        return out

    def on_notify(self) -> tuple[list, bool]:
        if not self._ready():
            return [], StatefulBatchLogic.RETAIN
        if self._waiting:
            return self.on_batch([])
        out, retain = self._on_notify()
        return out + self._base(), retain

    def _on_notify(self) -> tuple[list, bool]:
        if self.switched:
            out, self.switched = self.switched, []
            more, retain = self._on_notify()
            return out + more, retain
        if self.aligner is not None:
            out = self._release()
            self._report()
            return out, StatefulBatchLogic.RETAIN
        out = self._process([], self.clock.watermark(wall_ms()), self.clock.settled)
        self._report()
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list, bool]:
        if not self._ready():
            raise RuntimeFailure("the input ended before a shard's base snapshot was restored")
        out = self.on_batch([])[0] if self._waiting else []  # input kept while the base was awaited
        if self.live:  # the last epoch: the `bases` step is woken too and must write its base again
            self._compact = True
            return out + self._base(), StatefulBatchLogic.RETAIN
        until = self.cfg.until_ms
        end = max(self.clock.frontier, until if until is not None else NEVER)
        if self.aligner is not None:  # every input has ended: nothing more can come before anything waiting
            for part in self.aligner.parts:
                self.aligner.add_catalog(part, [], MAX_TS)
            return out + self._release(end), StatefulBatchLogic.RETAIN
        return out + self._process([], end + 1, end), StatefulBatchLogic.RETAIN  # `until` included

    def _report(self) -> None:
        if self.observer is not None:
            self.observer.report(self.shard, self.clock.watermark(wall_ms()))
            if self.aligner is not None and self.engine is not None:
                watches = self.engine.watches
                self.observer.report_aligner(0 if watches is None else len(watches), self.aligner.waiting(),
                                             self.aligner.late)

    def notify_at(self) -> datetime | None:
        if not self.live:
            return None
        if self._awaiting is not None or self._waiting:  # poll for the base, then catch up
            return datetime.fromtimestamp(wall_ms() / 1000, tz=timezone.utc)
        if self.switched:  # changes of a definition switch wait to go out
            return datetime.fromtimestamp(wall_ms() / 1000, tz=timezone.utc)
        if self.engine is not None and self.engine.more:  # a fan-out is under way: go on at once
            return datetime.fromtimestamp(wall_ms() / 1000, tz=timezone.utc)
        due = self.shard.next_due()
        if self.engine is not None:
            other = self.engine.next_due()
            due = other if due is None else (due if other is None else min(due, other))
        if self.aligner is not None and self.aligner.catalog:  # an update waits for contact time
            other = self.aligner.catalog[0][3]
            due = other if due is None else min(due, other)
        wall = None if due is None else self.clock.wake_at(due)
        if self.aligner is not None:  # contact events wait for the catalogue's time
            other = self.aligner.wake_at()
            if other is not None:
                wall = other if wall is None else min(wall, other)
        if wall is None:
            return None
        return datetime.fromtimestamp(max(wall, 0) / 1000, tz=timezone.utc)

    def snapshot(self) -> bytes | None:
        """The pickled (version, base id, changes since that base or the whole state without one,
        clock state, campaign state or None, aligner state or None, input not yet processed);
        None when nothing keeps snapshots (`FlowConfig.snapshots`), as nothing resumes. Pickled
        here, once (Bytewax then stores the bytes as they are), so that the time and size of
        every snapshot are measured (`espresso_snapshot_*`)."""
        if not self.cfg.snapshots:
            return None
        if self._awaiting is not None:  # not built yet: what it was resumed with, and the input since
            base_id, delta, clock_state, campaign_state, aligner_state = self._awaiting
            return pack((SNAPSHOT_V3, base_id, delta, clock_state, campaign_state, aligner_state, self._waiting))
        start = time.perf_counter()
        shard = self.shard
        if self.base_id is None:
            part: Any = shard.snapshot(copy=False)
        else:
            part = shard.delta()
            if shard.changed_rows() > max(self.cfg.compact_min_rows, self.cfg.compact_share * len(shard)):
                self._compact = True  # written by the next batch (only a batch can send it on)
        blob = pack((SNAPSHOT_V3, self.base_id, part, self.clock.snapshot(),
                     None if self.engine is None else self.engine.snapshot(),
                     None if self.aligner is None else self.aligner.snapshot(), self._waiting))
        if self.observer is not None:
            self.observer.m.on_snapshot(time.perf_counter() - start, len(blob))
        return blob


class BaseItem(NamedTuple):
    """A shard's state written whole, from `ShardLogic` to `BaseLogic` under the same key."""

    base_id: str
    blob: bytes


#: base id -> pickled state, put by `BaseLogic` when it resumes, taken by the `ShardLogic` of
#: the same key: Bytewax routes a key to the same worker in every step, and builds a step's
#: resumed keys before its first batch (the order across the two steps is not fixed, so a
#: shard waits for its base: `ShardLogic._ready`).
RESTORED: dict[str, bytes] = {}


class BaseLogic(StatefulBatchLogic):
    """Keeps a shard's latest base. Woken only when a new one arrives (or at the end of input,
    when the shard sends one again), so Bytewax writes it only then: between bases, a shard's
    own snapshots carry only its changes."""

    def __init__(self, resume: BaseItem | None) -> None:
        self.latest: BaseItem | None = None
        if resume is not None:
            RESTORED[resume.base_id] = resume.blob

    def on_batch(self, values: list[BaseItem]) -> tuple[list, bool]:
        self.latest = values[-1]
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> BaseItem:
        latest, self.latest = self.latest, None  # not kept: the next wake brings a new one
        if latest is None:
            raise RuntimeFailure("a shard base was woken without a new base to write")
        return latest


SNAPSHOT_V2 = "shard-v2"
SNAPSHOT_V3 = "shard-v3"
#: How long a resumed shard waits for its base before it stops the flow.
BASE_WAIT_S = 120.0
#: Contacts with waiting triggers decided per shard and call in the live flow: about 0.1-0.3 s
#: of work, after which the shard's other input goes first (a fan-out spread over calls).
SWEEP_LIMIT = 2000
