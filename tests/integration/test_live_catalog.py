"""Catalog triggers live: `espresso run --campaigns` reads the contact events and the catalogue
topic and writes the messages and decisions `espresso replay --catalog` writes, with the two
topics read in whatever order Kafka serves them, and through a SIGKILL and a restart.
"""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from state.timeutil import parse_ts
from tests.integration.adversarial import CAMPAIGN_T0
from tests.integration.catalog_stream import CATALOG_CAMPAIGNS, catalog_stream
from tests.integration.live import (D, Espresso, Tail, by_id, campaign_outputs, compare_campaigns, produce,
                                    read_all, replay_outputs, run_to_end, tick)

pytestmark = pytest.mark.integration

T0 = CAMPAIGN_T0
PARTS = 2


def _topics(factory) -> dict[str, str]:
    return {"events": factory(PARTS, prefix="events"), "changes": factory(PARTS, prefix="changes"),
            "dlq": factory(1, prefix="dlq"), "messages": factory(PARTS, prefix="messages"),
            "decisions": factory(1, prefix="decisions"), "conversions": factory(1, prefix="conversions"),
            "catalog": factory(PARTS, prefix="catalog")}


def _produce_catalog(bootstrap: str, topic: str, records: list) -> None:
    """Keyed by product_id, as a shop's catalogue service would (bytes: a broken record)."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for rec in records:
        if isinstance(rec, bytes):
            p.produce(topic, rec, b"broken")
        else:
            p.produce(topic, orjson.dumps(rec), rec["product_id"].encode())
        p.poll(0)
    assert p.flush(30) == 0


def _args(topics: dict[str, str], camps) -> tuple[str, ...]:
    return ("--campaigns", str(camps), "--messages-topic", topics["messages"], "--decisions-topic",
            topics["decisions"], "--conversions-topic", topics["conversions"], "--catalog-topic", topics["catalog"],
            "--allowed-lateness", "0s", "--batch-size", "100")


def _stream(seed: int):
    events, updates = catalog_stream(seed, contacts=150, products=15, t0=T0, span_ms=2 * D, events=2500)
    bad = b'{"event_id": "u-bad", "product_id": "p000", "type": "product_updated", "ts": 5}'  # no price or inventory
    end = max(parse_ts(e["ts"]) for e in events + updates) + D
    return events, updates, bad, end


def _check(tmp_path, kafka_bootstrap, topics, camps, events, updates, bad, end, ticks, clean: bool) -> None:
    cat_file = tmp_path / "catalog.jsonl"
    cat_file.write_bytes(b"".join(orjson.dumps(u) + b"\n" for u in updates) + bad + b"\n")
    want = replay_outputs(tmp_path, events + ticks, until_ms=end, campaigns=camps, catalog=cat_file)
    live = campaign_outputs(kafka_bootstrap, topics["messages"], topics["decisions"])
    by_campaign = {c: sum(m["campaign_id"] == c for m in want["messages"])
                   for c in ("price-drop", "back-in-stock", "low-stock")}
    assert all(n >= 10 for n in by_campaign.values()), f"the stream exercises too little: {by_campaign}"
    problems = compare_campaigns(*live, want["messages"], want["decisions"], clean=clean)
    live_changes = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["changes"])]
    if by_id(live_changes) != by_id(want["changes"]):
        problems.append("segment changes differ")
    dead = [(dict(m.headers())["espresso-reason"].decode(),
             orjson.loads(dict(m.headers())["espresso-source"])["topic"], m.value())
            for m in read_all(kafka_bootstrap, topics["dlq"])]
    if dead != [("missing_field", topics["catalog"], bad)]:
        problems.append(f"the broken catalogue record is not the one dead letter: {dead}")
    assert not problems, "\n".join(problems)


def test_live_catalog_triggers_equal_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Both topics produced in full before the run starts: the flow reads them in whatever
    interleaving the partitions give, and still decides every update at its instant."""
    topics = _topics(kafka_topic_factory)
    events, updates, bad, end = _stream(21)
    produce(kafka_bootstrap, topics["events"], events)
    _produce_catalog(kafka_bootstrap, topics["catalog"], updates + [bad])
    ticks = [tick(p, end) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(kafka_bootstrap, topics["events"], [t], partition=p)
    camps = tmp_path / "catalog-campaigns.yaml"
    camps.write_text(CATALOG_CAMPAIGNS)
    run_to_end(tmp_path, kafka_bootstrap, (topics["events"], topics["changes"], topics["dlq"]),
               *_args(topics, camps), "--shards-per-partition", "3")
    _check(tmp_path, kafka_bootstrap, topics, camps, events, updates, bad, end, ticks, clean=True)


def test_live_catalog_across_sigkill_equals_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Killed once it has written messages, with half of both inputs read; restarted on the same
    recovery directory with the rest: the product book, the watches and the waiting events
    survive, and the deduplicated outputs are replay's."""
    topics = _topics(kafka_topic_factory)
    events, updates, bad, end = _stream(34)
    half_e, half_u = len(events) // 2, len(updates) // 2
    while parse_ts(events[half_e]["ts"]) <= parse_ts(events[half_e - 1]["ts"]):
        half_e += 1
    camps = tmp_path / "catalog-campaigns.yaml"
    camps.write_text(CATALOG_CAMPAIGNS)
    args = (*_args(topics, camps), "--recovery-dir", str(tmp_path / "recovery"), "--epoch-interval", "300ms")
    run_topics = (topics["events"], topics["changes"], topics["dlq"])
    produce(kafka_bootstrap, topics["events"], events[:half_e])
    _produce_catalog(kafka_bootstrap, topics["catalog"], updates[:half_u])
    tail = Tail(kafka_bootstrap, topics["messages"])
    try:
        with Espresso(tmp_path, kafka_bootstrap, run_topics, *args, name="killed") as first:
            got = tail.wait_for(lambda rec: True, 60)
            assert got is not None, f"no message before the SIGKILL:\n{first.tail()}"
            first.kill()
    finally:
        tail.close()
    produce(kafka_bootstrap, topics["events"], events[half_e:])
    _produce_catalog(kafka_bootstrap, topics["catalog"], updates[half_u:] + [bad])
    ticks = [tick(p, end) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(kafka_bootstrap, topics["events"], [t], partition=p)
    run_to_end(tmp_path, kafka_bootstrap, run_topics, *args)
    _check(tmp_path, kafka_bootstrap, topics, camps, events, updates, bad, end, ticks, clean=False)
