"""`espresso deliver` takes what the consumer has fetched instead of waiting for a full batch,
and `--claim-lease` sets how long a dead sender's claims hold messages back.
Against the real broker started by the fixture."""

from __future__ import annotations

import argparse
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flows.deliver import DeliverConfigError, add_deliver_args, config_from_args, next_batch


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


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_deliver_args(parser)
    return parser.parse_args(["--bootstrap-servers", "k:9092", "--redis-url", "redis://127.0.0.1:6379/0", *argv])


def test_claim_lease_flag_and_its_errors():
    assert config_from_args(_args(), environ={}).claim_lease_s == 300.0
    assert config_from_args(_args("--claim-lease", "90s"), environ={}).claim_lease_s == 90.0
    with pytest.raises(DeliverConfigError, match=r"--claim-lease \(ESPRESSO_DELIVER_CLAIM_LEASE\).*'soon'"):
        config_from_args(_args("--claim-lease", "soon"), environ={})
