"""`espresso deliver` takes what the consumer has fetched instead of waiting for a full batch,
and `--claim-lease` sets how long a dead sender's claims hold messages back.
Against the real broker started by the fixture."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from flows.deliver import next_batch


def _consumer(bootstrap: str, topic: str) -> Consumer:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-deliver-batch", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 20})
    c.assign([TopicPartition(topic, 0, 0)])
    return c


def _produce(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, value=str(i).encode())
    assert p.flush(10) == 0


def test_a_partial_batch_is_returned_at_once(kafka_bootstrap, kafka_topic_factory):
    """Three messages, batch size 500, timeout 5 s: they come back long before either is reached
    (`consume(500, 5)` alone would hold them for the whole 5 s)."""
    topic = kafka_topic_factory()
    _produce(kafka_bootstrap, topic, 3)
    c = _consumer(kafka_bootstrap, topic)
    try:
        got, started = [], time.monotonic()
        while len(got) < 3 and time.monotonic() - started < 20:
            got += [m.value() for m in next_batch(c, 500, 5.0) if m.error() is None]
        assert got == [b"0", b"1", b"2"]
        assert time.monotonic() - started < 4.0
    finally:
        c.close()


def test_never_more_than_the_batch_size_and_an_idle_wait_ends_empty(kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory()
    _produce(kafka_bootstrap, topic, 7)
    c = _consumer(kafka_bootstrap, topic)
    try:
        got, deadline = [], time.monotonic() + 20
        while len(got) < 7 and time.monotonic() < deadline:
            batch = next_batch(c, 3, 1.0)
            assert len(batch) <= 3
            got += [m.value() for m in batch if m.error() is None]
        assert got == [str(i).encode() for i in range(7)]
        started = time.monotonic()
        assert next_batch(c, 3, 0.3) == []
        assert 0.25 <= time.monotonic() - started < 3.0
    finally:
        c.close()
