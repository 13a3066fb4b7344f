"""Settings of the segment flow, checked once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from state.campaigns import load_campaigns
from state.dedup import DEFAULT_HORIZON
from state.definitions import load_segments
from state.intake import Intake
from state.timeutil import NEVER
from state.program import Program, compile_program

__all__ = ["FlowConfig", "REPLAY", "LIVE", "DEFAULT_MAX_CLOCK_SKEW_MS", "load_program"]

REPLAY, LIVE = "replay", "live"
DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60_000


#: Defaults of `FlowConfig.compact_share` and `compact_min_rows`: a snapshot then costs about
#: what changed (BENCHMARKS.md, "Snapshots that cost what changed").
COMPACT_SHARE = 0.25
COMPACT_MIN_ROWS = 10_000


@dataclass(frozen=True)
class FlowConfig:
    """How the same flow runs for a finite replay or on a live stream.

    - `replay`: exact; a contact is evaluated once time moves past its instant, time is
      driven only by event times and runs to `until_ms` at the end of input.
    - `live`: a contact is evaluated as soon as every event of its instant has been read
      on its partition; time-driven changes wait for the partition's latest event time
      minus `allowed_lateness_ms`, which moves on with the wall clock while the partition
      is caught up (state/timekeeping.py).

    Either way an event stamped more than `max_clock_skew_ms` ahead of the wall clock
    (replay: of `until_ms`) is a dead letter (`future_ts`) and moves no time.
    """

    program: Program
    mode: str = REPLAY
    until_ms: int | None = None
    allowed_lateness_ms: int = 60_000
    shards_per_partition: int = 1
    dedup_horizon: int = DEFAULT_HORIZON
    max_event_bytes: int = 64 * 1024
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS
    campaigns: Any = None  # state.campaigns Campaigns; the program must include their Keep
    #: Whether state snapshots are kept (recovery on). Bytewax asks every stateful step for
    #: a snapshot at each epoch even when it stores none, and a shard's is a copy of all its
    #: columns: without recovery that copy is only time and a peak of memory.
    snapshots: bool = True
    #: Where the live flow records (metrics.registry.EspressoMetrics); None: the process's own.
    metrics: Any = None
    #: Catalogue input partitions (catalog triggers): each shard merges them with its contact
    #: events in event time (state/align.py). Empty: no catalogue input.
    catalog_parts: tuple[str, ...] = ()
    #: The contact input's partitions: a catalogue update goes to every shard of each.
    contact_parts: tuple[str, ...] = ("0",)
    #: Live: how long after the wall clock a caught-up catalogue partition still counts as
    #: unsettled (an update stamped earlier than that when read is late). Contact events wait
    #: for it: the price of deciding catalog triggers exactly.
    catalog_lateness_ms: int = 1_000
    #: A shard writes a new base (its whole state) once the contacts changed since the last
    #: one exceed this share of those held, and this many (flows/logic.py `ShardLogic._base`).
    compact_share: float = COMPACT_SHARE
    compact_min_rows: int = COMPACT_MIN_ROWS

    def __post_init__(self) -> None:
        if self.mode not in (REPLAY, LIVE):
            raise ValueError(f"mode must be {REPLAY!r} or {LIVE!r}: {self.mode!r}")
        if self.allowed_lateness_ms < 0:
            raise ValueError(f"allowed lateness must be >= 0 ms: {self.allowed_lateness_ms}")
        if not 1 <= self.shards_per_partition <= 4096:
            raise ValueError(f"shards per partition must be within 1..4096: {self.shards_per_partition}")
        if self.max_clock_skew_ms < 0:
            raise ValueError(f"max clock skew must be >= 0 ms: {self.max_clock_skew_ms}")
        if self.dedup_horizon < 1:
            raise ValueError(f"dedup horizon must be >= 1: {self.dedup_horizon}")
        if self.catalog_lateness_ms < 0:
            raise ValueError(f"catalog lateness must be >= 0 ms: {self.catalog_lateness_ms}")

    def shard_keys(self) -> list[str]:
        """Every shard of the flow (the keys a catalogue update is broadcast to)."""
        return [f"{p}.{sub}" for p in self.contact_parts for sub in range(self.shards_per_partition)]

    def live_metrics(self) -> Any:
        if self.metrics is not None:
            return self.metrics
        from metrics.registry import get_metrics

        return get_metrics()

    def new_intake(self, frontier: int = NEVER) -> Intake:
        """A partition's intake. Without campaigns, events of types no segment uses are not
        routed to shards (the campaign stage sees every event, so then all are)."""
        wanted = frozenset(self.program.type_masks) if self.campaigns is None else None
        intake = Intake(self.shards_per_partition, self.max_event_bytes, frontier, wanted)
        if self.mode == REPLAY and self.until_ms is not None:
            intake.ts_limit = self.until_ms + self.max_clock_skew_ms  # live: per batch, from the wall clock
        return intake


def load_program(segments: Path | None, campaigns: str | Path | None):
    """The compiled segments and, if asked, the campaigns (`builtin` or a file) they feed."""
    segs = load_segments(segments)
    if campaigns is None:
        return compile_program(segs), None
    camps = load_campaigns(campaigns, segs)
    return compile_program(list(camps.segments), camps.required_keep()), camps
