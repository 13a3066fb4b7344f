"""Backfilling history for new definitions (issue 16): a state whose input lost its beginning
(retention) is stopped; `espresso backfill` builds the facts new segments need (a lifetime
sum, the times of an event type no segment read) from an archive or from the topic; then
`espresso run` with the new definitions switches them in, and from then on the new segments'
memberships and changes equal `espresso replay` of the whole history with the new
definitions, also for contacts only the archive knew."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from state.timeutil import format_ms, parse_ts
from tests.integration.live import (D, H, ROOT, change_key, members_at, produce, read_all, replay_changes,
                                    run_to_end, shop_events, tick, write_segments)

pytestmark = pytest.mark.integration

T0 = parse_ts("2026-05-04T00:00:00Z")
PARTS = 2
NEW = """
include_builtin: true
segments:
  - id: spent-40
    when: {lifetime: {type: order_placed, aggregate: sum, property: value, op: ">=", value: 40}}
  - id: browsing
    when: {event: {type: product_viewed, at_least: 2, within: 2d}}
"""
NEW_IDS = ("spent-40", "browsing")


def _backfill(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """As a user runs it: from the directory that holds the files, with relative paths."""
    return subprocess.run([sys.executable, "-m", "commands.cli", "backfill", *args], cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120)


def _run_switched_and_compare(kafka_bootstrap, tmp_path, topics, args, events_before, later, first, new,
                              on_topic: int = 0):
    """`later[:on_topic]` are on the topic already, unread by the state."""
    end = parse_ts(later[-1]["ts"]) + 5 * D
    switch = parse_ts(later[0]["ts"]) - 1
    later, unread = later[on_topic:], later[:on_topic]
    produce(kafka_bootstrap, topics[0], later)
    ticks = [tick(p, end) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(kafka_bootstrap, topics[0], [t], partition=p)
    run_to_end(tmp_path, kafka_bootstrap, topics, *args, "--segments", str(new))
    every = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]
    second = every[len(first):]
    switched = [c for c in second if c["cause"] == {"kind": "definition_changed"}]
    assert {c["segment_id"] for c in switched} == set(NEW_IDS)
    want_all = replay_changes(tmp_path, events_before + unread + later + ticks, end, segments=new)
    for seg in NEW_IDS:
        live = [c for c in every if c["segment_id"] == seg]
        want = [c for c in want_all if c["segment_id"] == seg]
        for at in (switch, parse_ts(later[len(later) // 2]["ts"]), end):
            assert members_at(live, seg, at) == members_at(want, seg, at), (seg, format_ms(at))
        after = sorted(change_key(c) for c in live if parse_ts(c["at"]) > switch)
        assert after == sorted(change_key(c) for c in want if parse_ts(c["at"]) > switch), seg
        assert len(after) > 10 and len(members_at(want, seg, switch)) > 5, seg
    return switched


def test_an_archive_gives_the_history_the_topic_lost(kafka_bootstrap, kafka_topic_factory, tmp_path):
    events = shop_events(150, 2500, seed=5, t0=T0, span_ms=8 * D)
    lost, cut = len(events) // 4, len(events) // 2
    later = [dict(e, ts=format_ms(parse_ts(e["ts"]) + 2 * H)) for e in events[cut:]]
    topics = (kafka_topic_factory(PARTS, prefix="events"), kafka_topic_factory(PARTS, prefix="changes"),
              kafka_topic_factory(1, prefix="dlq"))
    args = ("--recovery-dir", str(tmp_path / "recovery"), "--allowed-lateness", "0s", "--epoch-interval", "300ms")
    produce(kafka_bootstrap, topics[0], events[lost:cut])  # the first quarter is past the topic's retention
    run_to_end(tmp_path, kafka_bootstrap, topics, *args)
    first = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]
    new = write_segments(tmp_path, NEW)
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events[:cut]) + b"not json\n")

    proc = _backfill(tmp_path, "--recovery-dir", "recovery", "--segments", new.name, "--history", archive.name)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 fact(s) built" in proc.stderr and "1 invalid lines" in proc.stderr, proc.stderr
    dead = [orjson.loads(x) for x in (tmp_path / "recovery" / "backfill-dead-letters.jsonl").read_bytes().splitlines()]
    assert [(d["reason"], d["source"]["line"]) for d in dead] == [("not_json", cut + 1)]
    added = int(proc.stderr.split(" contacts added")[0].rsplit(" ", 1)[1])
    assert added > 0  # contacts whose every event was past retention, placed by their key's partition

    switched = _run_switched_and_compare(kafka_bootstrap, tmp_path, topics, args, events[:cut], later, first, new)
    assert len(switched) > 10

    # a second backfill finds nothing left to build
    again = _backfill(tmp_path, "--recovery-dir", "recovery", "--segments", new.name, "--history", archive.name)
    assert again.returncode == 0 and "nothing to backfill" in again.stderr, again.stderr


def test_the_topic_itself_is_the_history_while_retention_covers_it(kafka_bootstrap, kafka_topic_factory, tmp_path):
    events = shop_events(120, 2000, seed=6, t0=T0, span_ms=6 * D)
    cut = len(events) // 2
    later = [dict(e, ts=format_ms(parse_ts(e["ts"]) + 2 * H)) for e in events[cut:]]
    topics = (kafka_topic_factory(PARTS, prefix="events"), kafka_topic_factory(PARTS, prefix="changes"),
              kafka_topic_factory(1, prefix="dlq"))
    args = ("--recovery-dir", str(tmp_path / "recovery"), "--allowed-lateness", "0s", "--epoch-interval", "300ms")
    produce(kafka_bootstrap, topics[0], events[:cut])
    run_to_end(tmp_path, kafka_bootstrap, topics, *args)
    first = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]
    new = write_segments(tmp_path, NEW)
    # what the state has read is all the history: later events already on the topic are not
    produce(kafka_bootstrap, topics[0], later[:50])
    proc = _backfill(tmp_path, "--recovery-dir", "recovery", "--segments", new.name, "--from-topic",
                     "--bootstrap-servers", kafka_bootstrap, "--input-topic", topics[0])
    assert proc.returncode == 0, proc.stderr
    assert "2 fact(s) built" in proc.stderr and f"from {cut} history events" in proc.stderr, proc.stderr
    _run_switched_and_compare(kafka_bootstrap, tmp_path, topics, args, events[:cut], later, first, new, on_topic=50)


def test_without_a_history_or_with_a_bad_one_it_says_what_to_give(tmp_path):
    (tmp_path / "recovery").mkdir()
    cases = [((), "give the history"),
             (("--history", "missing.jsonl"), "missing.jsonl: no such file"),
             (("--from-topic",), "--from-topic needs --bootstrap-servers"),
             (("--history", "."), "holds no *.jsonl file")]
    for extra, message in cases:
        proc = _backfill(tmp_path, "--recovery-dir", "recovery", *extra)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)
    proc = _backfill(tmp_path, "--recovery-dir", "recovery", "--history", "x.jsonl") if (
        tmp_path / "x.jsonl").write_text("{}\n") else None
    assert proc is not None and proc.returncode == 2 and "no recovery partitions" in proc.stderr, proc.stderr


@pytest.mark.parametrize("librdkafka, ours", [("murmur2", "murmur2"), ("consistent", "crc32")])
def test_contacts_are_placed_in_the_partition_the_producers_give_their_key(kafka_bootstrap, kafka_topic_factory,
                                                                             librdkafka, ours):
    """Our partitioners agree with the Kafka client's, checked on the broker's delivery reports."""
    from confluent_kafka import Producer

    from connectors.partitioners import PARTITIONERS, detect_partitioner

    topic = kafka_topic_factory(7, prefix="keys")
    p = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": librdkafka})
    got: dict[str, int] = {}
    keys = [f"c{i:05d}" for i in range(300)] + ["", "é-contact", "a" * 37]
    for k in keys:
        p.produce(topic, b"{}", k.encode(), on_delivery=lambda err, msg: got.__setitem__(msg.key().decode(),
                                                                                      msg.partition()))
    assert p.flush(30) == 0
    assert len(set(got.values())) == 7
    assert all(PARTITIONERS[ours](k.encode(), 7) == got[k] for k in keys if k)
    assert detect_partitioner({k: v for k, v in got.items() if k}, 7) == ours
