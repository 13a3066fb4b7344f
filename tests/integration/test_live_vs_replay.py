"""`espresso run` on Kafka gives the changes `espresso replay` gives, however it is scaled."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.live import D, by_id, produce, read_all, replay_changes, run_to_end, shop_events, tick

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000  # 2026-09-21, far from the wall clock: only event time drives these runs
SPAN = 10 * D
PARTS = 4


def _topics(kafka_topic_factory, parts: int = PARTS) -> tuple[str, str, str]:
    return (kafka_topic_factory(parts, prefix="events"), kafka_topic_factory(parts, prefix="changes"),
            kafka_topic_factory(1, prefix="dlq"))


def _stream(bootstrap: str, topic: str, events: list[dict]) -> list[dict]:
    """Events keyed by contact, then on every partition a tick 10 days after the last event,
    so each partition's watermark passes every window: the live output is then complete."""
    produce(bootstrap, topic, events)
    ticks = []
    for p in range(PARTS):
        t = tick(p, T0 + SPAN + 10 * D)
        produce(bootstrap, topic, [t], partition=p)
        ticks.append(t)
    return events + ticks


def test_live_changes_equal_replay_changes(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Every change replay finds is on segment-changes with the same change_id and fields, and
    nothing else is (events in order per contact on 4 partitions, built-in segments)."""
    topics = _topics(kafka_topic_factory)
    events = _stream(kafka_bootstrap, topics[0], shop_events(300, 4000, seed=11, t0=T0, span_ms=SPAN))
    run_to_end(tmp_path, kafka_bootstrap, topics, "--allowed-lateness", "60s")

    msgs = read_all(kafka_bootstrap, topics[1])
    live = [orjson.loads(m.value()) for m in msgs]
    expected = replay_changes(tmp_path, events, until_ms=T0 + SPAN + 5 * D)
    assert len(expected) > 500
    assert by_id(live) == by_id(expected)
    assert len(live) == len(expected), "no change is written twice in a clean run"
    # Keys are contact ids; every record has its processing time.
    assert all(m.key().decode() == orjson.loads(m.value())["contact_id"] for m in msgs)
    assert all("processed_at" in r for r in live)
    # A contact's changes are in one partition, in order (seq increasing).
    per_contact: dict[str, list] = {}
    for m in msgs:
        r = orjson.loads(m.value())
        per_contact.setdefault(r["contact_id"], []).append((m.partition(), r["seq"]))
    for cid, seqs in per_contact.items():
        assert len({p for p, _ in seqs}) == 1, cid
        assert [s for _, s in seqs] == sorted(s for _, s in seqs), cid


def test_one_and_two_workers_and_two_processes_give_the_same_changes(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Scaling out (2 worker threads; 2 processes of 1 worker) changes where state lives, not the
    changes: the same set of records as with 1 worker."""
    events_topic = kafka_topic_factory(PARTS, prefix="events")
    _stream(kafka_bootstrap, events_topic, shop_events(200, 2500, seed=5, t0=T0, span_ms=SPAN))
    results = {}
    for name, args in (("1 worker", ["-w", "1"]), ("2 workers", ["-w", "2", "--shards-per-partition", "3"])):
        topics = (events_topic, kafka_topic_factory(PARTS, prefix="changes"), kafka_topic_factory(1, prefix="dlq"))
        run_to_end(tmp_path, kafka_bootstrap, topics, *args)
        results[name] = by_id(orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1]))

    # Two processes of one cluster, as a StatefulSet runs them.
    from tests.integration.live import Espresso
    from tests.servers import free_port

    topics = (events_topic, kafka_topic_factory(PARTS, prefix="changes"), kafka_topic_factory(1, prefix="dlq"))
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [Espresso(tmp_path, kafka_bootstrap, topics, "--stop-at-end", "-i", str(i), "-a", addresses, name=f"p{i}")
             for i in range(2)]
    try:
        for p in procs:
            assert p.wait(90) == 0, p.tail()
    finally:
        for p in procs:
            p.__exit__(None, None, None)
    results["2 processes"] = by_id(orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1]))

    assert len(results["1 worker"]) > 300
    assert results["2 workers"] == results["1 worker"]
    assert results["2 processes"] == results["1 worker"]


def test_invalid_messages_go_to_the_dlq_with_reason_and_original_bytes(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """An invalid message never stops the flow: it lands on the DLQ topic as its original bytes,
    with reason, detail and source (topic, partition, offset) in headers; valid ones still count."""
    topics = (kafka_topic_factory(1, prefix="events"), kafka_topic_factory(1, prefix="changes"),
              kafka_topic_factory(1, prefix="dlq"))
    bad = {
        b"{not json": "not_json",
        b"[1, 2]": "not_object",
        b'{"event_id": "b1", "contact_id": "c1", "type": "email_open"}': "missing_field",
        b'{"event_id": "b2", "contact_id": "c1", "type": "email_open", "ts": "yesterday"}': "bad_ts",
        b'{"event_id": "b3", "contact_id": "c1", "type": "consent_changed", "ts": 1790000000000, '
        b'"properties": {"channel": "fax", "status": "subscribed"}}': "bad_consent",
        b"\xff\xfe binary": "not_json",
        b"": "not_json",
        b'{"event_id": "b4", "contact_id": "c1", "type": "x", "ts": 1, "pad": "' + b"x" * 70_000 + b'"}': "too_large",
    }
    good = [
        {"event_id": "g1", "contact_id": "c1", "type": "consent_changed", "ts": T0,
         "properties": {"channel": "email", "status": "subscribed"}},
        {"event_id": "g2", "contact_id": "c1", "type": "email_open", "ts": T0 + 1000},
    ]
    values = produce(kafka_bootstrap, topics[0], [good[0], *bad, good[1]])
    run_to_end(tmp_path, kafka_bootstrap, topics)

    dead = read_all(kafka_bootstrap, topics[2])
    assert sorted(m.value() for m in dead) == sorted(bad)
    for m in dead:
        h = dict(m.headers())
        assert h["espresso-reason"].decode() == bad[m.value()], m.value()[:50]
        assert h["espresso-detail"]
        src = orjson.loads(h["espresso-source"])
        assert src["topic"] == topics[0] and src["partition"] == 0
        assert values[src["offset"]] == m.value()
    changes = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]
    assert [(c["contact_id"], c["segment_id"], c["direction"]) for c in changes] == [
        ("c1", "email-espresso", "enter")]
