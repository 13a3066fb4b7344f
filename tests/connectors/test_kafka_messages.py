"""Kafka channel and record writer against the test broker (tansu, from the shared fixture)."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.delivery import DeliveryConfigError
from connectors.idempotency import IdempotencyConfig, RedisIdempotency
from connectors.kafka_messages import (
    KafkaMessageChannel,
    KafkaMessagesConfig,
    KafkaRecordWriter,
    kafka_settings_from_env,
)
from connectors.sender import Sender, SenderConfig

pytestmark = pytest.mark.integration


def message(n: int) -> dict:
    return {"schema": 1, "message_id": f"{n:032x}", "campaign_id": "push-espresso-nudge", "channel": "push",
            "contact_id": f"c-{n}", "to": {"push_token": f"t{n}"}, "subject": "", "body": "Come back", "data": {}}


def read_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 60.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    out = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
        time.sleep(0.3)  # anything beyond `expected` would show up here
        while (msg := consumer.poll(0.2)) is not None:
            if msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_messages_produced_once_keyed_by_contact(kafka_bootstrap, kafka_topic_factory, redis_url, key_prefix):
    """The default channel produces each message record once (even when submitted twice), key
    contact_id, header espresso-message-id, with a `sent` decision after the broker's ack."""
    topic = kafka_topic_factory(partitions=2)
    channel = KafkaMessageChannel(KafkaMessagesConfig(bootstrap_servers=kafka_bootstrap, topic=topic))
    decisions = []
    store = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=key_prefix))
    with Sender(SenderConfig(max_in_flight=32, max_queued=128), store, {}, default=channel,
                on_result=decisions.append) as sender:
        for i in range(60):
            sender.submit(message(i))
        for i in range(10):
            sender.submit(message(i))
        assert sender.flush(60)
    got = read_all(kafka_bootstrap, topic, 2, 60)
    assert len(got) == 60
    assert sorted(orjson.loads(m.value())["message_id"] for m in got) == sorted(message(i)["message_id"] for i in range(60))
    assert all(m.key().decode() == orjson.loads(m.value())["contact_id"] for m in got)
    assert all(dict(m.headers())["espresso-message-id"] == orjson.loads(m.value())["message_id"].encode() for m in got)
    assert sorted(d["outcome"] for d in decisions) == ["sent"] * 60 + ["skipped_duplicate"] * 10


def test_record_writer_dead_letters_and_decisions(kafka_bootstrap, kafka_topic_factory):
    """Dead letters go keyed by contact with header espresso-reason; decisions keyed by contact."""
    dlq, decisions = kafka_topic_factory(), kafka_topic_factory()
    writer = KafkaRecordWriter(kafka_bootstrap)
    writer.dead_letter_callback(dlq)({"schema": 1, "reason": "http_400", "detail": "HTTP 400", "message": message(1)})
    writer.decision_callback(decisions)({"schema": 1, "contact_id": "c-2", "outcome": "sent", "reason": ""})
    assert writer.close(30) == 0 and writer.errors == 0
    [dead] = read_all(kafka_bootstrap, dlq, 1, 1)
    assert dead.key() == b"c-1" and dict(dead.headers())["espresso-reason"] == b"http_400"
    assert orjson.loads(dead.value())["message"] == message(1)
    [decision] = read_all(kafka_bootstrap, decisions, 1, 1)
    assert decision.key() == b"c-2" and orjson.loads(decision.value())["outcome"] == "sent"


def test_settings_from_env_and_masked_repr():
    """KAFKA_* variables map to librdkafka settings; the password never shows in a repr."""
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
           "KAFKA_SASL_PASSWORD": "hunter2"}
    settings = kafka_settings_from_env(env)
    assert settings == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u",
                        "sasl.password": "hunter2"}
    config = KafkaMessagesConfig(bootstrap_servers="b:9092", settings=settings)
    assert "hunter2" not in repr(config) and "hunter2" not in repr(KafkaMessageChannel(config))
    with pytest.raises(DeliveryConfigError, match="bootstrap_servers"):
        KafkaMessagesConfig(bootstrap_servers="")


def test_unreachable_broker_is_a_failed_delivery():
    """No broker: after delivery_timeout_s the send fails as data with a `kafka_*` reason."""
    import asyncio

    from tests.servers import free_port

    channel = KafkaMessageChannel(KafkaMessagesConfig(bootstrap_servers=f"127.0.0.1:{free_port()}",
                                                      delivery_timeout_s=1.0))

    async def go():
        await channel.start()
        result = await channel.send(message(1))
        channel._producer.purge()  # nothing to flush on close
        await channel.close()
        return result

    result = asyncio.run(go())
    assert not result.ok and result.reason.startswith("kafka_"), result
