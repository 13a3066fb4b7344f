"""Decision and dead-letter records of `espresso deliver` to Kafka.

`KafkaRecordWriter` is a thread-safe producer of JSON records with a poll thread, for
`Sender(dead_letter=..., on_result=...)`: dead letters go to `retargeting-messages-dlq` with
header `espresso-reason`, decisions to `retargeting-decisions`. Its producer comes from the
one Kafka client factory (`KafkaConfig.producer()`: idempotent, `acks=all`, security).

`espresso deliver` writes one decision per message, so a write is kept to the encoding and
the `produce`: librdkafka reports only failed deliveries (`delivery.report.only.error`, one
producer-wide callback instead of a Python call per record) and the produced-records metric
is counted locally and published on `flush` (deliver flushes before every commit).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from metrics.registry import EspressoMetrics, get_metrics

from .delivery import DeliveryConfigError
from .kafka_config import KafkaConfig

__all__ = ["DECISIONS_TOPIC", "MESSAGES_DLQ_TOPIC", "MESSAGES_TOPIC", "KafkaRecordWriter"]

log = logging.getLogger(__name__)

MESSAGES_TOPIC = "retargeting-messages"
MESSAGES_DLQ_TOPIC = "retargeting-messages-dlq"
DECISIONS_TOPIC = "retargeting-decisions"


class KafkaRecordWriter:
    """Thread-safe JSON record producer with its own poll thread (dead letters, decisions)."""

    def __init__(self, kafka: KafkaConfig, metrics: EspressoMetrics | None = None) -> None:
        try:
            # Decisions are not on the latency path: a longer linger batches them.
            self._producer = Producer(kafka.producer(**{"linger.ms": 20, "delivery.report.only.error": True,
                                                        "on_delivery": self._delivered}))
        except KafkaException as exc:
            raise DeliveryConfigError(f"kafka record writer: {exc}") from exc
        self.metrics = metrics or get_metrics()
        self.errors = 0
        self._produced: dict[str, int] = {}  # topic -> records not yet counted on the metrics
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="espresso-kafka-records", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors += 1
            self.metrics.on_kafka_error(msg.topic(), "produce", err.name())
            log.error("kafka record writer: lost a record for %s: %s", msg.topic(), err.str())

    def write(self, topic: str, record: Mapping[str, Any], key: str | None = None,
              headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce one record; waits while the local queue is full."""
        value = orjson.dumps(record)
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers)
                with self._lock:
                    self._produced[topic] = self._produced.get(topic, 0) + 1
                return
            except BufferError:
                self._producer.poll(0.05)

    def dead_letter_callback(self, topic: str = MESSAGES_DLQ_TOPIC) -> Callable[[dict], None]:
        """For `Sender(dead_letter=...)`: key contact_id, header `espresso-reason`."""
        def dead_letter(record: dict) -> None:
            contact = (record.get("message") or {}).get("contact_id")
            self.write(topic, record, None if contact is None else str(contact),
                       [("espresso-reason", str(record.get("reason", "")).encode())])
        return dead_letter

    def decision_callback(self, topic: str = DECISIONS_TOPIC) -> Callable[[dict], None]:
        """For `Sender(on_result=...)`: decision records keyed by contact_id."""
        def decision(record: dict) -> None:
            contact = record.get("contact_id")
            self.write(topic, record, None if contact is None else str(contact))
        return decision

    def flush(self, timeout: float = 30.0) -> int:
        """Records still not acknowledged after `timeout` seconds; publishes the produced counts."""
        with self._lock:
            produced, self._produced = self._produced, {}
        for topic, n in produced.items():
            self.metrics.on_produced(topic, n)
        return self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> int:
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join()
        return left
