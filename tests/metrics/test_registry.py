"""EspressoMetrics: each hook changes exactly the exposition it names; labels stay bounded."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from metrics import registry as registry_mod
from metrics.labels import EVENT_TYPES, INVALID_REASONS, OTHER
from metrics.registry import (EVENT_TIME_LAG_BUCKETS, INGEST_LATENCY_BUCKETS, MAX_SEGMENTS, METRIC_NAMES,
                              EspressoMetrics, get_metrics)


def test_every_family_is_listed_in_metric_names(registry, metrics):
    """METRIC_NAMES lists exactly the families the registry exposes, with their types."""
    assert {f.name: f.type for f in registry.collect()} == METRIC_NAMES


def test_on_event_counts_by_type(metrics, value):
    """on_event(type, n) adds n to espresso_events_consumed_total{type}."""
    metrics.on_event("email_open")
    metrics.on_event("email_open", 4)
    assert value("espresso_events_consumed_total", type="email_open") == 5
    assert value("espresso_events_consumed_total", type="order_placed") == 0


def test_unknown_event_type_counts_as_other_until_declared(metrics, value):
    """A type outside the known list is `other`; a declared type gets its own label."""
    metrics.on_event("page_view")
    assert value("espresso_events_consumed_total", type=OTHER) == 1
    assert value("espresso_events_consumed_total", type="page_view") is None
    metrics.declare(event_types=["page_view"])
    metrics.on_event("page_view")
    assert value("espresso_events_consumed_total", type="page_view") == 1


def test_known_types_and_reasons_exist_at_zero(metrics, value):
    """Every known type and reason code has a series from the start, so sums in alerts exist."""
    for t in (*EVENT_TYPES, OTHER):
        assert value("espresso_events_consumed_total", type=t) == 0
    for r in INVALID_REASONS:
        assert value("espresso_events_invalid_total", reason=r) == 0


def test_on_invalid_counts_by_reason(metrics, value):
    """on_invalid(reason) counts per reason code; an unknown code is `other`."""
    metrics.on_invalid("bad_ts")
    metrics.on_invalid("bad_ts", 2)
    metrics.on_invalid("cosmic_rays")
    assert value("espresso_events_invalid_total", reason="bad_ts") == 3
    assert value("espresso_events_invalid_total", reason=OTHER) == 1


def test_late_duplicate_ignored_counters(metrics, value):
    """on_late, on_duplicate and on_ignored each feed their own counter."""
    metrics.on_late()
    metrics.on_duplicate(3)
    metrics.on_ignored(2)
    assert value("espresso_events_late_total") == 1
    assert value("espresso_events_duplicate_total") == 3
    assert value("espresso_events_ignored_total") == 2


def test_add_shard_stats_adds_deltas(metrics, value):
    """add_shard_stats takes a ShardStats-like delta (duplicates, ignored, late)."""
    metrics.add_shard_stats(SimpleNamespace(applied=10, duplicates=2, ignored=1, late=4, changes=3))
    assert (value("espresso_events_duplicate_total"), value("espresso_events_ignored_total"),
            value("espresso_events_late_total")) == (2, 1, 4)


def test_on_change_counts_and_observes_both_latencies(metrics, value):
    """on_change counts {segment,direction} and puts each latency in its histogram bucket."""
    metrics.on_change("email-espresso", "enter", event_time_lag_s=0.4, ingest_latency_s=0.002)
    metrics.on_change("email-espresso", "exit", event_time_lag_s=61.0)
    assert value("espresso_segment_changes_total", segment="email-espresso", direction="enter") == 1
    assert value("espresso_segment_changes_total", segment="email-espresso", direction="exit") == 1
    assert value("espresso_change_event_time_lag_seconds_bucket", le="0.25") == 0
    assert value("espresso_change_event_time_lag_seconds_bucket", le="0.5") == 1
    assert value("espresso_change_event_time_lag_seconds_bucket", le="75.0") == 2
    assert value("espresso_change_event_time_lag_seconds_count") == 2
    assert value("espresso_change_ingest_latency_seconds_bucket", le="0.0025") == 1
    assert value("espresso_change_ingest_latency_seconds_count") == 1


def test_negative_latency_is_observed_as_zero(metrics, value):
    """A change timed before its event (clock skew) lands in the first bucket, sum unchanged."""
    metrics.on_change("s", "enter", event_time_lag_s=-5.0)
    assert value("espresso_change_event_time_lag_seconds_bucket", le="0.001") == 1
    assert value("espresso_change_event_time_lag_seconds_sum") == 0


def test_on_changes_measures_lag_from_change_at(metrics, value, clock):
    """on_changes takes Change objects: lag = clock - at, latency = now - ingest."""
    at_ms = int((clock.now - 30.0) * 1000)
    changes = [SimpleNamespace(segment_id="sms-espresso", direction="enter", at=at_ms)] * 2
    metrics.on_changes(changes, ingest_s=clock.now - 0.003)
    assert value("espresso_segment_changes_total", segment="sms-espresso", direction="enter") == 2
    assert value("espresso_change_event_time_lag_seconds_sum") == pytest.approx(60.0)
    assert value("espresso_change_ingest_latency_seconds_sum") == pytest.approx(0.006, abs=1e-4)


def test_histogram_bounds(registry, metrics):
    """Event-time lag spans 1 ms..10 min, ingest latency 0.5 ms..10 s (as documented)."""
    assert (EVENT_TIME_LAG_BUCKETS[0], EVENT_TIME_LAG_BUCKETS[-1]) == (0.001, 600.0)
    assert (INGEST_LATENCY_BUCKETS[0], INGEST_LATENCY_BUCKETS[-1]) == (0.0005, 10.0)
    assert list(EVENT_TIME_LAG_BUCKETS) == sorted(EVENT_TIME_LAG_BUCKETS)


def test_members_are_summed_over_shards(metrics, value):
    """set_members per shard: the exposition sums shards; a shard's new value replaces its old."""
    metrics.set_members("email-espresso", 10, shard=("p0", 0))
    metrics.set_members("email-espresso", 5, shard=("p0", 1))
    metrics.set_members("email-espresso", 7, shard=("p0", 0))
    assert value("espresso_segment_members", segment="email-espresso") == 12
    metrics.forget_shard(("p0", 1))
    assert value("espresso_segment_members", segment="email-espresso") == 7


def test_declared_segments_start_at_zero(metrics, value):
    """declare(segments=...) creates members and change series at 0."""
    metrics.declare(segments=["win-back-90d"])
    assert value("espresso_segment_members", segment="win-back-90d") == 0
    for d in ("enter", "exit"):
        assert value("espresso_segment_changes_total", segment="win-back-90d", direction=d) == 0


def test_state_gauges_are_summed_over_shards(metrics, value):
    """set_state(contacts, timers, shard=) sums over shards."""
    metrics.set_state(100, 40, shard=0)
    metrics.set_state(50, 10, shard=1)
    assert value("espresso_contacts") == 150
    assert value("espresso_timers_pending") == 50


def test_watermark_delay_follows_the_clock_and_the_oldest_shard(metrics, value, clock):
    """Delay = clock - oldest watermark, still growing when nothing updates it (a stall)."""
    assert value("espresso_watermark_delay_seconds") is None
    metrics.set_watermark(clock.now - 60, shard=0)
    metrics.set_watermark(clock.now - 90, shard=1)
    assert value("espresso_watermark_delay_seconds") == pytest.approx(90)
    assert value("espresso_watermark_timestamp_seconds") == pytest.approx(clock.now - 90)
    clock.advance(600)
    assert value("espresso_watermark_delay_seconds") == pytest.approx(690)


def test_watermark_now_argument_anchors_the_delay(metrics, value, clock):
    """set_watermark(wm, now): delay is now - wm at the call, plus the clock's advance since."""
    metrics.set_watermark(1000.0, 1060.0)
    assert value("espresso_watermark_delay_seconds") == pytest.approx(60)
    clock.advance(5)
    assert value("espresso_watermark_delay_seconds") == pytest.approx(65)


def test_messages_and_send_duration(metrics, value):
    """on_message counts {campaign,channel,outcome}; observe_send times {channel}."""
    metrics.on_message("email-espresso-resend", "email", "sent")
    metrics.on_message("email-espresso-resend", "email", "failed", 2)
    metrics.on_message("c", "email", "exploded")
    metrics.observe_send("sms", 0.07)
    assert value("espresso_messages_total", campaign="email-espresso-resend", channel="email", outcome="sent") == 1
    assert value("espresso_messages_total", campaign="email-espresso-resend", channel="email",
                 outcome="failed") == 2
    assert value("espresso_messages_total", campaign="c", channel="email", outcome=OTHER) == 1
    assert value("espresso_send_duration_seconds_bucket", channel="sms", le="0.1") == 1
    assert value("espresso_send_duration_seconds_bucket", channel="sms", le="0.05") == 0


def test_consumer_lag_per_partition(metrics, value):
    """set_consumer_lag sets a gauge per topic and partition (the latest value wins)."""
    metrics.set_consumer_lag("contact-events", 3, 120)
    metrics.set_consumer_lag("contact-events", 3, 80)
    assert value("espresso_kafka_consumer_lag", topic="contact-events", partition="3") == 80


def test_kafka_errors_and_produced(metrics, value):
    """on_kafka_error counts {topic,op,code}; on_produced counts records per topic."""
    metrics.on_kafka_error("segment-changes", "produce", "_MSG_TIMED_OUT")
    metrics.on_produced("segment-changes", 5)
    assert value("espresso_kafka_errors_total", topic="segment-changes", op="produce", code="_MSG_TIMED_OUT") == 1
    assert value("espresso_records_produced_total", topic="segment-changes") == 5


def test_build_info_carries_the_version(metrics, value):
    """espresso_build_info{version} is 1."""
    assert value("espresso_build_info", version="1.2.3") == 1


def test_labels_stay_bounded_whatever_the_input(registry, metrics):
    """Thousands of distinct ids (say, contact ids by mistake) cannot grow the series count
    past the known values, the undeclared allowance and `other`."""
    for i in range(2000):
        junk = f"c-{i}"
        metrics.on_event(junk)
        metrics.on_invalid(junk)
        metrics.on_change(junk, junk)
        metrics.set_members(junk, 1)
        metrics.on_message(junk, junk, junk)
    fams = {f.name: f for f in registry.collect()}
    types = {s.labels["type"] for s in fams["espresso_events_consumed"].samples}
    assert types == {*EVENT_TYPES, OTHER}
    reasons = {s.labels["reason"] for s in fams["espresso_events_invalid"].samples}
    assert reasons == {*INVALID_REASONS, OTHER}
    segments = {s.labels["segment"] for s in fams["espresso_segment_members"].samples}
    assert len(segments) == MAX_SEGMENTS + 1 and OTHER in segments
    directions = {s.labels["direction"] for s in fams["espresso_segment_changes"].samples}
    assert directions == {OTHER}
    assert len(generate_latest(registry)) < 200_000


def test_hooks_are_safe_from_many_threads(metrics, value):
    """Worker threads recording at once lose no increment and no shard."""
    def work(i: int) -> None:
        for _ in range(1000):
            metrics.on_event("email_open")
        metrics.set_state(1, 1, shard=i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert value("espresso_events_consumed_total", type="email_open") == 8000
    assert value("espresso_contacts") == 8


def test_registering_twice_in_one_registry_fails(registry, metrics):
    """Metrics are defined once per registry: a second instance on it is refused."""
    with pytest.raises(ValueError):
        EspressoMetrics(registry)


def test_get_metrics_is_one_instance_per_process_on_the_default_registry():
    """get_metrics() from many threads returns one instance, registered in REGISTRY once."""
    got: list[EspressoMetrics] = []
    threads = [threading.Thread(target=lambda: got.append(get_metrics())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in got}) == 1
    assert got[0].registry is REGISTRY
    assert REGISTRY.get_sample_value("espresso_build_info", {"version": registry_mod._version()}) == 1


def test_a_fresh_registry_is_independent_of_the_default(registry, metrics):
    """Metrics built on a passed-in registry do not appear in the default one."""
    metrics.on_event("email_open", 7)
    assert isinstance(registry, CollectorRegistry) and registry is not REGISTRY
    assert registry.get_sample_value("espresso_events_consumed_total", {"type": "email_open"}) == 7
