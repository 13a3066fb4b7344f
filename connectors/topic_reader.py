"""Reading whole topics, from their beginning to their end, for one-off readers such as
`espresso report`: a consumer with `assign()` (no group membership, nothing committed)."""

from __future__ import annotations

import time
from typing import Iterator, Mapping

from .kafka_config import KafkaConfig, KafkaConfigError
from .topics import list_topics

__all__ = ["check_topics", "read_to_end", "read_partitions", "first_offsets"]


def check_topics(kafka: KafkaConfig, topics: Mapping[str, str], fix: str = "") -> None:
    """Every topic of `topics` ({topic: the flag and variable naming it}) exists, else one line
    naming the first missing one. Lists all topics: asking for one by name could create it."""
    existing = list_topics(kafka)
    for topic, label in topics.items():
        if topic not in existing:
            raise KafkaConfigError(f"{label}: topic {topic!r} does not exist on {kafka.bootstrap_servers}"
                                   + (f"; {fix}" if fix else ""))


def read_to_end(kafka: KafkaConfig, topic: str, group_id: str = "espresso-reader",
                timeout_s: float = 300.0) -> Iterator[tuple[bytes | None, str]]:
    """(value, "topic[partition]@offset") of every record of `topic`, each partition from its
    beginning until the consumer reaches its end."""
    for batch in read_partitions(kafka, topic, group_id, timeout_s):
        for partition, offset, value in batch:
            yield value, f"{topic}[{partition}]@{offset}"


def read_partitions(kafka: KafkaConfig, topic: str, group_id: str = "espresso-reader", timeout_s: float = 300.0,
                    until: Mapping[int, int] | None = None) -> Iterator[list[tuple[int, int, bytes | None]]]:
    """Batches of (partition, offset, value): each partition from its beginning until the
    consumer reaches its end (librdkafka's end-of-partition event: the end offsets some brokers
    list, tansu's among them, are not the fetch's high watermark), or with `until` only those
    partitions, each up to (not including) its offset."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    from state.errors import RuntimeFailure

    try:
        consumer = Consumer(kafka.consumer(group_id, **{"enable.partition.eof": True}))
    except KafkaException as exc:
        raise KafkaConfigError(f"Kafka consumer for {topic!r}: {exc}") from None
    try:
        md = consumer.list_topics(timeout=15)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise KafkaConfigError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}")
        ends = {p: None for p in t.partitions} if until is None else {p: o for p, o in until.items() if o > 0}
        pending = set(ends)
        if not pending:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"could not read topic {topic!r} to its end within {timeout_s:.0f}s "
                                     f"(partitions left: {sorted(pending)})")
            batch = []
            for m in consumer.consume(1000, 0.5):
                err = m.error()
                p = m.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)
                    elif err.fatal():
                        raise RuntimeFailure(f"reading topic {topic!r}: {err.str()}")
                    continue
                end = ends.get(p)
                if p not in pending or (end is not None and m.offset() >= end):
                    pending.discard(p)
                    continue
                batch.append((p, m.offset(), m.value()))
                if end is not None and m.offset() >= end - 1:
                    pending.discard(p)
            if batch:
                yield batch
    finally:
        consumer.close()


def first_offsets(kafka: KafkaConfig, topic: str, partitions: list[int]) -> dict[int, int]:
    """{partition: its first retained offset} (above 0: retention deleted its beginning)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(kafka.consumer("espresso-reader"))
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[0] for p in partitions}
    finally:
        consumer.close()
