"""Report the engine's counters to Prometheus, as deltas, once per batch (live flow only).

The engine counts in plain integers (`Intake.consumed`, `ShardStats`); turning them into
metrics per batch instead of per event keeps the hot path free of metric calls.
"""

from __future__ import annotations


from metrics.labels import TOUCH_IGNORED_REASONS
from metrics.registry import EspressoMetrics
from state.campaigns import CampaignEngine, Conversion, Message
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
    """One shard's gauges, and with campaigns (`engine`) their results: decisions, releases,
    holdouts, conversions (from the outputs), attributed and ignored touches (from the engine)."""

    def __init__(self, shard: Shard, metrics: EspressoMetrics, engine: CampaignEngine | None = None) -> None:
        self.m = metrics
        self.key = id(self)  # one gauge series per shard; the exposition sums them
        self.last = shard.stats.copy()
        self.segments = [s.id for s in shard.program.segments]
        self.engine = engine
        self.late = 0
        if engine is not None:
            engine.touch_counts = {}  # the engine counts accepted touches there; `report` drains it
            self.ignored = {r: engine.stats.get(f"touches_{r}", 0) for r in TOUCH_IGNORED_REASONS}
            camps = engine.camps
            self.m.declare(campaigns=[c.id for c in camps], channels=sorted({c.channel for c in camps}))
            if engine.watches is not None:  # the catalog triggers' series exist from the start
                for c in camps:
                    if c.catalog is not None:
                        self.m.on_catalog_triggers(c.id, 0)
            self.m.declare_campaign_results(
                [(c.id, v.name, st.id) for c in camps for st in c.steps for v in st.variants],
                [(c.id, st.id) for c in camps if c.holdout_bp for st in c.steps])

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
        if self.engine is not None:
            self._report_touches(self.engine)
            if self.engine.watches is not None:
                self._report_catalog(self.engine)

    def _report_catalog(self, engine: CampaignEngine) -> None:
        counts = engine.catalog_counts
        if counts:
            for k, n in counts.items():
                self.m.on_catalog_triggers(engine.camps[k].id, n)
            counts.clear()

    def report_aligner(self, watches: int, waiting: int, late: int) -> None:
        if late > self.late:
            self.m.on_catalog_late(late - self.late)
            self.late = late
        self.m.set_catalog(watches, waiting, shard=self.key)

    def _report_touches(self, engine: CampaignEngine) -> None:
        counts = engine.touch_counts
        if counts:
            camps = engine.camps
            for (k, step, variant, kind), n in counts.items():
                c = camps[k]
                st = c.steps[step]
                name = st.variants[variant].name if variant < len(st.variants) else None
                self.m.on_touch(c.id, name, st.id, kind, n)
            counts.clear()
        for reason, seen in self.ignored.items():
            n = engine.stats.get(f"touches_{reason}", 0)
            if n != seen:
                self.m.on_touch_ignored(reason, n - seen)
                self.ignored[reason] = n

    def observe_ingest(self, out: list, arrival_ms: int) -> None:
        """Ingestion -> emission latency of the changes caused by a batch's events."""
        seconds = max(0, wall_ms() - arrival_ms) / 1000.0
        for item in out:
            if getattr(item, "cause_event_id", None) is not None:
                self.m.observe_ingest_latency(seconds)

    def count_outputs(self, outputs: list) -> None:
        """Campaign decisions by campaign, channel and outcome (a released message: `sent`);
        releases per variant and step, holdouts per step, conversions and their revenue."""
        m = self.m
        for o in outputs:
            if isinstance(o, Conversion):
                m.on_conversion(o.campaign_id, o.group, o.value, o.variant, o.step_id)
            elif isinstance(o, Message):
                m.on_message(o.campaign_id, o.channel, "sent")
                m.on_released(o.campaign_id, o.variant, o.step_id)
            else:
                m.on_message(o.campaign_id, o.channel, o.outcome)
                if o.outcome == "held_out":
                    m.on_held_out(o.campaign_id, o.step_id)
