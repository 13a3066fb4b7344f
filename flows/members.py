"""Apply a topic of segment changes to the Redis membership view (`espresso members --apply-changes-topic`).

The records are read from the topic's beginning to its current end; repeating this is
harmless: a change whose `seq` was already applied changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from state.errors import ConfigError, RuntimeFailure

__all__ = ["apply_changes_topic"]


def apply_changes_topic(view: Any, kafka: Any, topic: str, timeout_s: float = 120.0) -> tuple[int, int, int]:
    """Apply `topic` from its beginning to its end now; (applied, ignored, invalid)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    try:
        consumer = Consumer(kafka.consumer("espresso-members", **{"enable.partition.eof": True}))
    except KafkaException as exc:
        raise ConfigError(f"Kafka consumer: {exc}") from exc
    try:
        md = consumer.list_topics(timeout=15)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ConfigError(f"topic {topic!r} (--apply-changes-topic) does not exist on "
                                     f"{kafka.bootstrap_servers}")
        ends: dict[int, int] = {}
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        # `assign` with offset 0 below the low watermark resets to earliest (auto.offset.reset)
        applied = ignored = invalid = 0
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"could not read {topic!r} to its end within {timeout_s:.0f}s")
            changes: list = []
            for m in consumer.consume(1000, 0.5):
                if m.error():
                    continue
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    ends.pop(m.partition(), None)
                try:
                    record = orjson.loads(m.value() or b"")
                except orjson.JSONDecodeError:
                    invalid += 1
                    continue
                if isinstance(record, dict):
                    changes.append(record)
                else:
                    invalid += 1
            if changes:
                st = view.apply(changes)
                applied, ignored, invalid = applied + st.applied, ignored + st.ignored, invalid + st.invalid
        return applied, ignored, invalid
    finally:
        consumer.close()
