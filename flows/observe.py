"""Report the engine's counters to Prometheus, as deltas, once per batch (live flow only).

The engine counts in plain integers (`Intake.consumed`, `ShardStats`); turning them into
metrics per batch instead of per event keeps the hot path free of metric calls.
"""

from __future__ import annotations


from metrics.registry import EspressoMetrics
from state.campaigns import Conversion
from state.intake import Intake
from state.shard import Shard, ShardStats
from state.timeutil import wall_ms

__all__ = ["IntakeObserver", "ShardObserver"]


class IntakeObserver:
    def __init__(self, metrics: EspressoMetrics) -> None:
        self.m = metrics
        self.seen: dict[str, int] = {}
        self.ignored = 0

    def report(self, intake: Intake) -> None:
        if intake.ignored != self.ignored:
            self.m.add_shard_stats(ShardStats(ignored=intake.ignored - self.ignored))
            self.ignored = intake.ignored
        for etype, n in intake.consumed.items():
            delta = n - self.seen.get(etype, 0)
            if delta:
                self.m.on_event(etype, delta)
                self.seen[etype] = n


class ShardObserver:
    def __init__(self, shard: Shard, metrics: EspressoMetrics) -> None:
        self.m = metrics
        self.key = id(self)  # one gauge series per shard; the exposition sums them
        self.last = shard.stats.copy()
        self.segments = [s.id for s in shard.program.segments]

    def report(self, shard: Shard, watermark_ms: int) -> None:
        now, last = shard.stats, self.last
        self.m.add_shard_stats(ShardStats(duplicates=now.duplicates - last.duplicates,
                                          ignored=now.ignored - last.ignored, late=now.late - last.late))
        for seg, n in zip(self.segments, now.members):
            self.m.set_members(seg, n, shard=self.key)
        self.m.set_state(len(shard), shard.timers(), shard=self.key)
        if watermark_ms > 0:
            self.m.set_watermark(watermark_ms / 1000.0, shard=self.key)
        self.last = now.copy()

    def observe_ingest(self, out: list, arrival_ms: int) -> None:
        """Ingestion -> emission latency of the changes caused by a batch's events."""
        seconds = max(0, wall_ms() - arrival_ms) / 1000.0
        for item in out:
            if getattr(item, "cause_event_id", None) is not None:
                self.m.observe_ingest_latency(seconds)

    def count_outputs(self, outputs: list) -> None:
        """Campaign decisions by campaign, channel and outcome (a released message: `sent`)."""
        for o in outputs:
            if isinstance(o, Conversion):
                self.m.on_conversion(o.campaign_id, o.group, o.value)
            else:
                self.m.on_message(o.campaign_id, o.channel, getattr(o, "outcome", "sent"))
