"""The server fixtures give real, working servers (no mocks): Kafka, Redis, Prometheus."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.servers import FAST_GROUP_CONFIG

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]], headers=None) -> list:
    """Produce (key, value) records, wait for all acks, return the delivered messages."""
    delivered, errors = [], []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, msg: (errors if err else delivered).append(err or msg))
    assert producer.flush(30) == 0
    assert errors == []
    return delivered


def _consume(consumer: Consumer, count: int, timeout: float = 60) -> list:
    messages, deadline = [], time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            continue
        messages.append(msg)
    return messages


def test_kafka_round_trip_through_a_consumer_group(kafka_bootstrap, kafka_topic_factory):
    """A keyed message with a header, produced to a new topic, is read back unchanged by a
    consumer group starting from the earliest offset, and its commit is stored."""
    topic = kafka_topic_factory(partitions=1)
    _produce(kafka_bootstrap, topic, [("c-42", b'{"type": "email_open"}')],
             headers=[("espresso-reason", b"bad_ts")])

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **FAST_GROUP_CONFIG})
    try:
        consumer.subscribe([topic])
        (msg,) = _consume(consumer, 1)
        assert (msg.topic(), msg.key(), msg.value()) == (topic, b"c-42", b'{"type": "email_open"}')
        assert msg.headers() == [("espresso-reason", b"bad_ts")]
        consumer.commit(message=msg, asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed.offset == msg.offset() + 1
    finally:
        consumer.close()


def test_kafka_keys_land_on_consistent_partitions(kafka_bootstrap, kafka_topic_factory):
    """On a 4-partition topic every message of one key goes to one partition (also across
    producers), keys spread over several partitions, and each message is stored there."""
    topic = kafka_topic_factory(partitions=4)
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(topic, timeout=10)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2, 3]

    keys = [f"c-{i}" for i in range(20)]
    first = _produce(kafka_bootstrap, topic, [(k, f"{k}/a".encode()) for k in keys * 3])
    second = _produce(kafka_bootstrap, topic, [(k, f"{k}/b".encode()) for k in keys])
    partitions_of: dict[bytes, set[int]] = {}
    for msg in first + second:
        partitions_of.setdefault(msg.key(), set()).add(msg.partition())
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of
    assert len(set().union(*partitions_of.values())) > 1

    # Read every partition back directly (no group): each message is where the ack said.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "unused",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
        stored = _consume(consumer, 80)
    finally:
        consumer.close()
    assert len(stored) == 80
    assert all(msg.partition() in partitions_of[msg.key()] for msg in stored)


def test_redis_set_get(redis_url):
    """The Redis fixture is a real server: SET then GET returns the value, with a TTL."""
    client = redis.Redis.from_url(redis_url)
    assert client.set("k", "v", ex=60)
    assert client.get("k") == b"v"
    assert 0 < client.ttl("k") <= 60
    client.close()


def test_redis_db_is_flushed_between_tests(redis_url):
    """Each test using `redis_url` starts from an empty database, whatever earlier tests wrote."""
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_redis_stop_then_start_simulates_outage_and_recovery(redis_server, redis_url):
    """After stop() clients get connection errors on the same URL; after start() the same URL
    works again, with an empty database (no persistence)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    client.set("before", "1")

    redis_server.stop()
    assert not redis_server.running
    with pytest.raises(redis.ConnectionError):
        client.ping()

    redis_server.start()
    assert redis_server.url == redis_url
    assert client.ping()  # the client reconnects by itself
    assert client.get("before") is None
    client.close()


def test_prometheus_binary_runs(prometheus_binary):
    """The Debian prometheus binary is present and executable."""
    out = subprocess.run([prometheus_binary, "--version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0
    assert "prometheus, version" in (out.stdout + out.stderr)
