"""Every espresso metric, defined once against a registry passed in, recorded through hooks.

    flow / sources / sinks ──hook calls──▶ EspressoMetrics ──▶ CollectorRegistry ──▶ serve()

`EspressoMetrics(registry)` creates the metrics in `registry` (the process-wide default
`prometheus_client.REGISTRY` when None); the flow never touches a Counter directly but calls
named hooks (`on_event`, `on_change`, `set_watermark`...). `get_metrics()` returns the one
instance of the process, shared by every Bytewax worker thread; all hooks are thread-safe.

Gauges that describe state held per shard (segment members, contacts, timers, watermark)
take a `shard` key: each worker sets the value of the shards it owns and the exposition
sums them (the watermark: the oldest one), so workers never overwrite each other.

Sources and sinks take the object to record on (`metrics=`, default `get_metrics()`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily

from .labels import (CHANNELS, CONVERSION_GROUPS, DIRECTIONS, EVENT_TYPES, INVALID_REASONS, KAFKA_OPS, NONE,
                     OTHER, OUTCOMES, TOUCH_IGNORED_REASONS, BoundedLabel)

__all__ = [
    "EspressoMetrics", "get_metrics", "METRIC_NAMES", "EVENT_TIME_LAG_BUCKETS",
    "INGEST_LATENCY_BUCKETS", "SEND_DURATION_BUCKETS", "MAX_SEGMENTS", "MAX_CAMPAIGNS", "MAX_VARIANTS", "MAX_STEPS",
]

# Event time -> change emitted. A change caused by an event leaves in the batch after the
# event arrives: producer and transport delay plus batching, milliseconds to seconds. A
# change caused by time (a 72 h window ageing out) leaves when the watermark passes the
# instant, and the watermark trails event time by the allowed lateness (60 s by default),
# so those changes sit near 60-75 s: the buckets are dense around the lateness bound to
# tell "on time" from "behind". Mobile SDKs flush offline buffers minutes late; past
# 10 min the flow is behind (an incident, see the lag alerts) and +Inf is enough.
EVENT_TIME_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 45.0,
    60.0, 75.0, 90.0, 120.0, 300.0, 600.0,
)
# Ingestion (record read from Kafka) -> change emitted: our own processing. The engine
# spends microseconds per event, so 0.5 ms resolves a small batch; a full 5000-record
# batch takes tens of ms; seconds mean a snapshot, a GC pause or producer back-pressure,
# and 10 s is where the liveness probe starts to matter.
INGEST_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# One delivery attempt through a channel (SMTP, SMS/push gateway, webhook): a pooled
# connection answers in 5-100 ms, a new TLS handshake in 100-500 ms, and the connectors
# time out at 10-30 s, so the top buckets show timeouts apart from slow successes.
SEND_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

#: Undeclared segment / campaign ids admitted as label values before `other`.
MAX_SEGMENTS = 200
MAX_CAMPAIGNS = 200
#: Undeclared variant names / step ids admitted before `other`. `espresso run` declares those
#: of its campaign file; `espresso deliver` reads them from the message records (first come).
MAX_VARIANTS = 32
MAX_STEPS = 64
_MAX_TOPICS = 32
_MAX_ERROR_CODES = 64
_MAX_EXTRA_CHANNELS = 8
_MAX_EXTRA_TYPES = 0

#: Every metric family this module exposes: name -> type (names as in the exposition,
#: without the `_total`/`_bucket`/... sample suffixes).
METRIC_NAMES: dict[str, str] = {
    "espresso_events_consumed": "counter",
    "espresso_events_invalid": "counter",
    "espresso_events_late": "counter",
    "espresso_events_duplicate": "counter",
    "espresso_events_ignored": "counter",
    "espresso_segment_changes": "counter",
    "espresso_segment_members": "gauge",
    "espresso_change_event_time_lag_seconds": "histogram",
    "espresso_change_ingest_latency_seconds": "histogram",
    "espresso_messages": "counter",
    "espresso_campaign_released": "counter",
    "espresso_campaign_held_out": "counter",
    "espresso_campaign_delivered": "counter",
    "espresso_campaign_opened": "counter",
    "espresso_campaign_clicked": "counter",
    "espresso_conversions": "counter",
    "espresso_conversion_revenue": "counter",
    "espresso_touches_ignored": "counter",
    "espresso_snapshots": "counter",
    "espresso_snapshot_seconds": "counter",
    "espresso_snapshot_bytes": "counter",
    "espresso_catalog_updates": "counter",
    "espresso_catalog_triggers": "counter",
    "espresso_catalog_late_updates": "counter",
    "espresso_catalog_watches": "gauge",
    "espresso_catalog_waiting_events": "gauge",
    "espresso_send_duration_seconds": "histogram",
    "espresso_contacts": "gauge",
    "espresso_timers_pending": "gauge",
    "espresso_watermark_delay_seconds": "gauge",
    "espresso_watermark_timestamp_seconds": "gauge",
    "espresso_kafka_consumer_lag": "gauge",
    "espresso_kafka_errors": "counter",
    "espresso_records_produced": "counter",
    "espresso_build_info": "gauge",
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("espresso")
    except Exception:  # noqa: BLE001 - not installed (running from a source tree)
        return "0+unknown"


class _ShardGauges:
    """Collector of the per-shard gauges: members, contacts, timers, watermark.

    Each shard's latest values are kept; a scrape exports the sum over shards (members,
    contacts, timers), the oldest watermark and its delay behind the clock *at scrape
    time*, so a stalled flow shows a growing delay instead of a frozen one.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._declared: set[str] = set()
        self._members: dict[Hashable, dict[str, float]] = {}
        self._state: dict[Hashable, tuple[float, float]] = {}
        self._watermarks: dict[Hashable, tuple[float, float, float]] = {}
        self._catalog: dict[Hashable, tuple[float, float]] = {}

    # -- updates ---------------------------------------------------------------
    def declare(self, segments: Iterable[str]) -> None:
        with self._lock:
            self._declared.update(segments)

    def set_members(self, shard: Hashable, segment: str, n: float) -> None:
        with self._lock:
            self._members.setdefault(shard, {})[segment] = n

    def set_state(self, shard: Hashable, contacts: float, timers: float) -> None:
        with self._lock:
            self._state[shard] = (contacts, timers)

    def set_catalog(self, shard: Hashable, watches: float, waiting: float) -> None:
        with self._lock:
            self._catalog[shard] = (watches, waiting)

    def set_watermark(self, shard: Hashable, watermark_s: float, now_s: float | None) -> None:
        at = self._clock()
        with self._lock:
            self._watermarks[shard] = (watermark_s, at if now_s is None else now_s, at)

    def forget(self, shard: Hashable) -> None:
        with self._lock:
            self._members.pop(shard, None)
            self._state.pop(shard, None)
            self._watermarks.pop(shard, None)
            self._catalog.pop(shard, None)

    # -- exposition --------------------------------------------------------------
    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("espresso_segment_members", "Contacts currently in the segment.",
                              labels=["segment"]),
            GaugeMetricFamily("espresso_contacts", "Contacts held in state by this process."),
            GaugeMetricFamily("espresso_timers_pending",
                              "Scheduled membership re-evaluations (window expiries) pending."),
            GaugeMetricFamily("espresso_watermark_delay_seconds",
                              "Wall clock minus the oldest watermark of this process's shards."),
            GaugeMetricFamily("espresso_watermark_timestamp_seconds",
                              "Oldest event-time watermark of this process's shards (Unix time)."),
            GaugeMetricFamily("espresso_catalog_watches",
                              "(contact, product) views and carts kept for catalog triggers."),
            GaugeMetricFamily("espresso_catalog_waiting_events",
                              "Contact events and product updates waiting for the other input's event time."),
        )

    def describe(self):
        return list(self._families())

    def collect(self):
        members_f, contacts_f, timers_f, delay_f, wm_f, watches_f, waiting_f = self._families()
        now = self._clock()
        with self._lock:
            members = {s: 0.0 for s in self._declared}
            for per_shard in self._members.values():
                for seg, n in per_shard.items():
                    members[seg] = members.get(seg, 0.0) + n
            state = list(self._state.values())
            wms = list(self._watermarks.values())
            catalog = list(self._catalog.values())
        for seg in sorted(members):
            members_f.add_metric([seg], members[seg])
        yield members_f
        contacts_f.add_metric([], sum(c for c, _ in state))
        yield contacts_f
        timers_f.add_metric([], sum(t for _, t in state))
        yield timers_f
        if wms:
            delay_f.add_metric([], max(max(0.0, n - w + (now - at)) for w, n, at in wms))
            wm_f.add_metric([], min(w for w, _, _ in wms))
        yield delay_f
        yield wm_f
        watches_f.add_metric([], sum(w for w, _ in catalog))  # 0 without catalog triggers
        waiting_f.add_metric([], sum(n for _, n in catalog))
        yield watches_f
        yield waiting_f


class EspressoMetrics:
    """The metrics of one espresso process and the hooks that record them.

    `registry`: where the metrics are created (default: `prometheus_client.REGISTRY`, which
    `metrics.server.serve` exposes together with Bytewax's metrics). `clock`: seconds since
    the epoch, used for watermark delays and change lags (tests pass a fake one).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time,
                 version: str | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        self._clock = clock
        self._types = BoundedLabel("type", EVENT_TYPES, _MAX_EXTRA_TYPES)
        self._reasons = BoundedLabel("reason", INVALID_REASONS)
        self._directions = BoundedLabel("direction", DIRECTIONS)
        self._segments = BoundedLabel("segment", (), MAX_SEGMENTS)
        self._campaigns = BoundedLabel("campaign", (), MAX_CAMPAIGNS)
        self._variants = BoundedLabel("variant", (NONE,), MAX_VARIANTS)
        self._steps = BoundedLabel("step", (NONE,), MAX_STEPS)
        self._channels = BoundedLabel("channel", CHANNELS, _MAX_EXTRA_CHANNELS)
        self._outcomes = BoundedLabel("outcome", OUTCOMES)
        self._topics = BoundedLabel("topic", (), _MAX_TOPICS)
        self._codes = BoundedLabel("code", (), _MAX_ERROR_CODES)
        self._ops = BoundedLabel("op", KAFKA_OPS)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=reg)

        self._events = counter("espresso_events_consumed", "Valid contact events consumed, by type.", ("type",))
        self._invalid = counter("espresso_events_invalid",
                                "Invalid input records sent to the dead-letter sink, by reason.", ("reason",))
        self._late = counter("espresso_events_late",
                             "Events older than their contact's clock (applied as corrections).")
        self._duplicate = counter("espresso_events_duplicate", "Events dropped as redeliveries (same event_id).")
        self._ignored = counter("espresso_events_ignored", "Valid events no segment or campaign uses.")
        self._changes = counter("espresso_segment_changes", "Segment membership changes emitted.",
                                ("segment", "direction"))
        self._event_lag = Histogram(
            "espresso_change_event_time_lag_seconds",
            "Time from the instant a change happened (its event time) to its emission.",
            buckets=EVENT_TIME_LAG_BUCKETS, registry=reg)
        self._ingest_latency = Histogram(
            "espresso_change_ingest_latency_seconds",
            "Time from reading the causing record to emitting the change.",
            buckets=INGEST_LATENCY_BUCKETS, registry=reg)
        self._messages = counter("espresso_messages", "Retargeting message decisions, by outcome.",
                                 ("campaign", "channel", "outcome"))
        # Campaign results per campaign, variant and step (variant "" without A/B test, step
        # "" in a one-message campaign): what the flow released or held out, what `espresso
        # deliver` delivered, the touches and orders the flow attributed to released messages.
        arm = ("campaign", "variant", "step")
        self._released = counter("espresso_campaign_released",
                                 "Messages the flow released (decision sent), by campaign, variant and step.", arm)
        self._held_out = counter("espresso_campaign_held_out",
                                 "Steps the flow held back from a campaign's holdout (decision held_out).",
                                 ("campaign", "step"))
        self._delivered = counter("espresso_campaign_delivered",
                                  "Messages espresso deliver delivered (outcome sent), by campaign, variant and step.",
                                  arm)
        self._opened = counter("espresso_campaign_opened", "Opens (email_open, push_open) the flow attributed to "
                               "a message it released to that contact.", arm)
        self._clicked = counter("espresso_campaign_clicked", "Clicks (email_click, sms_click) the flow attributed "
                                "to a message it released to that contact.", arm)
        self._conversions = counter("espresso_conversions", "Orders attributed to a campaign's messages "
                                    "(group message: last touch), orders after a send, touched or not (group sent: intent to treat), "
                                    "or counted for its holdout (group holdout, variant \"\").",
                                    (*arm, "group"))
        self._revenue = counter("espresso_conversion_revenue", "Order value of those conversions (sum of "
                                "`value`, in the orders' currencies).", (*arm, "group"))
        self._touches_ignored = counter("espresso_touches_ignored", "Touches attributed to nothing: naming no "
                                        "message released to that contact (unknown), or a privacy proxy's open "
                                        "(machine).", ("reason",))
        self._snapshots = counter("espresso_snapshots", "State snapshots of shards written for recovery (one per "
                                  "shard and epoch in which it changed).")
        self._snapshot_seconds = counter("espresso_snapshot_seconds", "Time spent making shard snapshots (copy "
                                         "and pickle): its rate is the share of the time the flow spends on them.")
        self._snapshot_bytes = counter("espresso_snapshot_bytes", "Bytes of the shard snapshots written.")
        self._catalog_updates = counter("espresso_catalog_updates", "Valid product updates read from the "
                                        "catalogue input.")
        self._catalog_triggers = counter("espresso_catalog_triggers", "Runs product updates started: (contact, "
                                         "product) pairs a catalog trigger qualified, by campaign.", ("campaign",))
        self._catalog_late = counter("espresso_catalog_late_updates", "Product updates read after contact events "
                                     "later than them were processed (decided at once, not at their instant).")
        self._send = Histogram("espresso_send_duration_seconds", "Duration of one delivery attempt.",
                               ("channel",), buckets=SEND_DURATION_BUCKETS, registry=reg)
        self._lag = Gauge("espresso_kafka_consumer_lag",
                          "Messages between the partition's high watermark and our next offset.",
                          ("topic", "partition"), registry=reg)
        self._kafka_errors = counter("espresso_kafka_errors", "Kafka client errors, by operation and code.",
                                     ("topic", "op", "code"))
        self._produced = counter("espresso_records_produced", "Records handed to the producer, by topic.",
                                 ("topic",))
        self._build = Gauge("espresso_build_info", "Always 1; the version label tells the build.",
                            ("version",), registry=reg)
        self._shards = _ShardGauges(clock)
        reg.register(self._shards)

        self._build.labels(version or _version()).set(1)
        for t in (*EVENT_TYPES, OTHER):
            self._events.labels(t)
        for r in INVALID_REASONS:
            self._invalid.labels(r)
        self._ignored_reasons = BoundedLabel("reason", TOUCH_IGNORED_REASONS)

    # -- set-up ------------------------------------------------------------------------
    def declare(self, *, event_types: Iterable[str] = (), segments: Iterable[str] = (),
                campaigns: Iterable[str] = (), channels: Iterable[str] = ()) -> None:
        """Make configured ids known label values and create their series at zero.

        Call once at start-up with the segment ids, the event types custom segments use,
        and the campaign ids and channels: rates then exist from the first scrape, and those
        ids never fall into `other`.
        """
        event_types, segments = list(event_types), list(segments)
        self._types.declare(event_types)
        self._segments.declare(segments)
        self._campaigns.declare(campaigns)
        self._channels.declare(channels)
        for t in event_types:
            self._events.labels(t)
        for s in segments:
            for d in DIRECTIONS:
                self._changes.labels(s, d)
        self._shards.declare(segments)

    def declare_campaign_results(self, arms: Iterable[tuple[str, str | None, str | None]],
                                 holdouts: Iterable[tuple[str, str | None]] = ()) -> None:
        """Make the loaded campaigns' results known label values and create their series at 0.

        `arms`: every (campaign id, variant name, step id) a message can be released for;
        `holdouts`: every (campaign id, step id) of a campaign with a holdout. Call at start-up
        (`espresso run`): conversion rates then exist from the first scrape, and those values
        never fall into `other`. Idempotent.
        """
        arms, holdouts = list(arms), list(holdouts)
        self._campaigns.declare([a[0] for a in arms] + [h[0] for h in holdouts])
        self._variants.declare([a[1] or NONE for a in arms])
        self._steps.declare([a[2] or NONE for a in arms] + [h[1] or NONE for h in holdouts])
        for campaign, variant, step in arms:
            labels = (campaign, variant or NONE, step or NONE)
            for c in (self._released, self._opened, self._clicked):
                c.labels(*labels)
            for g in ("message", "sent"):
                self._conversions.labels(*labels, g)
                self._revenue.labels(*labels, g)
        for campaign, step in holdouts:
            self._held_out.labels(campaign, step or NONE)
            self._conversions.labels(campaign, NONE, step or NONE, "holdout")
            self._revenue.labels(campaign, NONE, step or NONE, "holdout")
        for r in TOUCH_IGNORED_REASONS:
            self._touches_ignored.labels(r)

    # -- input -------------------------------------------------------------------------
    def on_event(self, type: str, n: int = 1) -> None:  # noqa: A002 - the event field's name
        """`n` valid events of `type` consumed (unknown types count as `other`)."""
        self._events.labels(self._types(type)).inc(n)

    def on_invalid(self, reason: str, n: int = 1) -> None:
        """`n` invalid records dead-lettered with `reason` (a code of docs/interfaces.md)."""
        self._invalid.labels(self._reasons(reason)).inc(n)

    def on_late(self, n: int = 1) -> None:
        """`n` events older than their contact's clock."""
        self._late.inc(n)

    def on_duplicate(self, n: int = 1) -> None:
        """`n` redelivered events dropped."""
        self._duplicate.inc(n)

    def on_ignored(self, n: int = 1) -> None:
        """`n` valid events that nothing uses."""
        self._ignored.inc(n)

    def add_shard_stats(self, stats: Any) -> None:
        """Add a `state.shard.ShardStats` delta: its `duplicates`, `ignored` and `late`."""
        if stats.duplicates:
            self._duplicate.inc(stats.duplicates)
        if stats.ignored:
            self._ignored.inc(stats.ignored)
        if stats.late:
            self._late.inc(stats.late)

    # -- segment changes -----------------------------------------------------------------
    def on_change(self, segment: str, direction: str, event_time_lag_s: float | None = None,
                  ingest_latency_s: float | None = None) -> None:
        """One change emitted; lags in seconds when known (negative ones count as 0)."""
        self._changes.labels(self._segments(segment), self._directions(direction)).inc()
        if event_time_lag_s is not None:
            self._event_lag.observe(max(0.0, event_time_lag_s))
        if ingest_latency_s is not None:
            self._ingest_latency.observe(max(0.0, ingest_latency_s))

    def on_changes(self, changes: Iterable[Any], now_s: float | None = None,
                   ingest_s: float | None = None) -> None:
        """`on_change` for each `state.changes.Change` (fields `segment_id`, `direction`,
        `at` in epoch ms) emitted at `now_s` (default: the clock), caused by records read at
        `ingest_s` (epoch seconds, optional)."""
        now = self._clock() if now_s is None else now_s
        latency = None if ingest_s is None else now - ingest_s
        for ch in changes:
            self.on_change(ch.segment_id, ch.direction, now - ch.at / 1000.0, latency)

    def observe_ingest_latency(self, seconds: float) -> None:
        """Ingestion -> emission latency of one change, when recorded apart from `on_change`."""
        self._ingest_latency.observe(max(0.0, seconds))

    def set_members(self, segment: str, n: int, *, shard: Hashable = 0) -> None:
        """Members of `segment` in `shard` now (the exposition sums the shards)."""
        self._shards.set_members(shard, self._segments(segment), n)

    # -- retargeting -----------------------------------------------------------------------
    def on_message(self, campaign: str, channel: str, outcome: str, n: int = 1) -> None:
        """A message decision (`outcome` from docs/interfaces.md)."""
        self._messages.labels(self._campaigns(campaign), self._channels(channel), self._outcomes(outcome)).inc(n)

    def _arm(self, campaign: str, variant: str | None, step: str | None) -> tuple[str, str, str]:
        return (self._campaigns(campaign), self._variants(variant or NONE), self._steps(step or NONE))

    def on_released(self, campaign: str, variant: str | None, step: str | None, n: int = 1) -> None:
        """`n` messages released by the flow (None: no variant / a one-message campaign)."""
        self._released.labels(*self._arm(campaign, variant, step)).inc(n)

    def on_held_out(self, campaign: str, step: str | None, n: int = 1) -> None:
        """`n` steps held back from the campaign's holdout (decision `held_out`)."""
        self._held_out.labels(self._campaigns(campaign), self._steps(step or NONE)).inc(n)

    def on_delivered(self, campaign: str, variant: str | None, step: str | None, n: int = 1) -> None:
        """`n` messages delivered by `espresso deliver` (outcome `sent`)."""
        self._delivered.labels(*self._arm(campaign, variant, step)).inc(n)

    def on_touch(self, campaign: str, variant: str | None, step: str | None, kind: str, n: int = 1) -> None:
        """`n` touches (`kind` open | click) attributed to a released message."""
        counter = self._clicked if kind == "click" else self._opened
        counter.labels(*self._arm(campaign, variant, step)).inc(n)

    def on_touch_ignored(self, reason: str, n: int = 1) -> None:
        """`n` touches attributed to nothing (`reason` unknown | machine)."""
        self._touches_ignored.labels(self._ignored_reasons(reason)).inc(n)

    def on_conversion(self, campaign: str, group: str, value: float | int | None, variant: str | None = None,
                      step: str | None = None) -> None:
        """An order attributed (`group` message: last touch; sent: any order after a send;
        holdout: after a held-out step, no variant)."""
        holdout = group == "holdout"
        g = group if group in CONVERSION_GROUPS else "message"
        labels = (*self._arm(campaign, None if holdout else variant, step), g)
        self._conversions.labels(*labels).inc()
        if value is not None and value > 0:
            self._revenue.labels(*labels).inc(value)

    def observe_send(self, channel: str, seconds: float) -> None:
        """One delivery attempt through `channel` took `seconds`."""
        self._send.labels(self._channels(channel)).observe(max(0.0, seconds))

    def observe_sends(self, channel: str, seconds: Iterable[float]) -> None:
        """Many `observe_send`s with one label lookup (`espresso deliver` records per batch)."""
        child = self._send.labels(self._channels(channel))
        for s in seconds:
            child.observe(max(0.0, s))

    # -- state and time ----------------------------------------------------------------------
    def set_state(self, contacts: int, timers: int, *, shard: Hashable = 0) -> None:
        """Contacts held and timers pending in `shard` now (the exposition sums the shards)."""
        self._shards.set_state(shard, contacts, timers)

    def on_snapshot(self, seconds: float, nbytes: int) -> None:
        """One shard's snapshot took `seconds` and `nbytes`."""
        self._snapshots.inc()
        self._snapshot_seconds.inc(max(0.0, seconds))
        self._snapshot_bytes.inc(nbytes)

    def on_catalog_updates(self, n: int) -> None:
        self._catalog_updates.inc(n)

    def on_catalog_triggers(self, campaign: str, n: int) -> None:
        self._catalog_triggers.labels(self._campaigns(campaign)).inc(n)

    def on_catalog_late(self, n: int) -> None:
        self._catalog_late.inc(n)

    def set_catalog(self, watches: int, waiting: int, *, shard: Hashable = 0) -> None:
        """Watch entries and events waiting in the aligner of `shard` (the exposition sums the shards)."""
        self._shards.set_catalog(shard, watches, waiting)

    def set_watermark(self, watermark_epoch_s: float, now_epoch_s: float | None = None, *,
                      shard: Hashable = 0) -> None:
        """`shard`'s watermark, read at processing time `now_epoch_s` (default: the clock).

        The delay exported is `now_epoch_s - watermark` plus the time passed since this call,
        for the shard furthest behind.
        """
        self._shards.set_watermark(shard, watermark_epoch_s, now_epoch_s)

    def forget_shard(self, shard: Hashable) -> None:
        """Drop a shard's gauges (its partition moved to another worker or process)."""
        self._shards.forget(shard)

    # -- Kafka --------------------------------------------------------------------------------
    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Messages between `topic[partition]`'s high watermark and the next offset we read."""
        self._lag.labels(self._topics(topic), str(int(partition))).set(lag)

    def on_kafka_error(self, topic: str, op: str, code: str) -> None:
        """A Kafka client error (`op`: consume or produce; `code`: librdkafka's error name)."""
        self._kafka_errors.labels(self._topics(topic), self._ops(op), self._codes(code)).inc()

    def on_produced(self, topic: str, n: int = 1) -> None:
        """`n` records handed to the producer for `topic`."""
        self._produced.labels(self._topics(topic)).inc(n)


_instance: EspressoMetrics | None = None
_instance_lock = threading.Lock()


def get_metrics() -> EspressoMetrics:
    """The process's `EspressoMetrics` on the default registry (created on first call)."""
    global _instance
    inst = _instance
    if inst is None:
        with _instance_lock:
            if _instance is None:
                _instance = EspressoMetrics()
            inst = _instance
    return inst
