"""The record writer of `espresso deliver` against the test broker (tansu, from the shared fixture)."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from connectors.kafka_config import KafkaConfig
from connectors.kafka_messages import KafkaRecordWriter
from metrics.registry import EspressoMetrics

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


def test_record_writer_dead_letters_and_decisions(kafka_bootstrap, kafka_topic_factory):
    """Dead letters go keyed by contact with header espresso-reason; decisions keyed by contact;
    each record handed over is counted on the metrics object the writer was given."""
    dlq, decisions = kafka_topic_factory(), kafka_topic_factory()
    registry = CollectorRegistry()
    writer = KafkaRecordWriter(KafkaConfig(kafka_bootstrap), EspressoMetrics(registry))
    writer.dead_letter_callback(dlq)({"schema": 1, "reason": "http_400", "detail": "HTTP 400", "message": message(1)})
    writer.decision_callback(decisions)({"schema": 1, "contact_id": "c-2", "outcome": "sent", "reason": ""})
    assert writer.close(30) == 0 and writer.errors == 0
    [dead] = read_all(kafka_bootstrap, dlq, 1, 1)
    assert dead.key() == b"c-1" and dict(dead.headers())["espresso-reason"] == b"http_400"
    assert orjson.loads(dead.value())["message"] == message(1)
    [decision] = read_all(kafka_bootstrap, decisions, 1, 1)
    assert decision.key() == b"c-2" and orjson.loads(decision.value())["outcome"] == "sent"
    produced = {t: registry.get_sample_value("espresso_records_produced_total", {"topic": t}) for t in (dlq, decisions)}
    assert produced == {dlq: 1.0, decisions: 1.0}


def test_record_writer_uses_the_one_kafka_factory():
    """Security and tuning reach the writer's producer through KafkaConfig, as for every client."""
    cfg = KafkaConfig.from_env("127.0.0.1:1", {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                               "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
                                               "KAFKA_SASL_PASSWORD": "hunter2"})
    conf = cfg.producer(**{"linger.ms": 20})
    assert conf["sasl.password"] == "hunter2" and conf["enable.idempotence"] is True and conf["linger.ms"] == 20
    writer = KafkaRecordWriter(cfg, EspressoMetrics(CollectorRegistry()))
    assert writer.close(1) == 0
