"""Segment changes and dead letters to Kafka.

Delivery without per-batch flushes, and without loss across crashes:

- one idempotent producer per process (`enable.idempotence`: a retry never writes a
  duplicate into a partition), shared by the changes and dead-letter sinks;
- `write_batch` only hands messages to librdkafka and serves delivery reports with
  `poll(0)`; librdkafka sends them within `linger.ms` (5 ms), so latency stays low;
- the sinks are `FixedPartitionedSink`s so that Bytewax calls `snapshot()` on them at the
  end of every epoch, and `snapshot()` flushes (when recovery is on): an epoch is committed
  to the recovery store only once everything it wrote is acknowledged by the brokers. After a crash the
  flow resumes from the last committed epoch and writes the rest again (at-least-once,
  with the same `change_id`s).

A delivery failure (librdkafka gave up after its retries and `message.timeout.ms`, 5 min by
default) is logged and counted in a metric, and then stops the flow (`DeliveryFailed`, raised
by the next write or epoch end of any sink partition of the process) so that nothing is lost:
with recovery, the epoch holding the record is never committed and a restart resumes before
it; without, a restart reads the input again. A broker outage shorter than
`message.timeout.ms` only delays the output.

Changes: key `contact_id`, value = `Change.record()` + `processed_at`, topic
`segment-changes`. Dead letters: key none, value = the original bytes, headers
`espresso-reason`, `espresso-detail`, `espresso-source` (JSON), topic `contact-events-dlq`.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Any, Callable

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from metrics.registry import EspressoMetrics, get_metrics
from state.timeutil import format_ms

from .kafka_config import KafkaConfig

__all__ = ["DeliveryFailed", "KafkaChangeSink", "KafkaDeadLetterSink", "SharedProducer", "encode_change",
           "encode_dead_letter"]

log = logging.getLogger(__name__)

#: How many sink partitions each sink has: items are routed to them by key, so a contact's
#: changes keep their order; each worker owns some of them.
SINK_PARTS = 16


class DeliveryFailed(RuntimeError):
    """Records the brokers never acknowledged: the flow stops rather than go on without them."""


class SharedProducer:
    """One librdkafka producer per process and configuration, reference counted."""

    _lock = threading.Lock()
    _all: dict[tuple, "SharedProducer"] = {}

    def __init__(self, conf: dict, metrics: EspressoMetrics | None = None) -> None:
        self.producer = Producer({**conf, "error_cb": self._on_client_error})
        self.metrics = metrics or get_metrics()
        self.refs = 0
        self.delivered = 0
        self.failed = 0
        self.last_failure = ""
        self._flush_lock = threading.Lock()

    @classmethod
    def get(cls, cfg: KafkaConfig) -> "SharedProducer":
        key = tuple(sorted((k, str(v)) for k, v in cfg.producer().items()))
        with cls._lock:
            sp = cls._all.get(key)
            if sp is None:
                sp = cls._all[key] = cls(cfg.producer())
            sp.refs += 1
            return sp

    def release(self) -> None:
        with self._lock:
            self.refs -= 1
            last = self.refs <= 0
            if last:
                for k, v in list(self._all.items()):
                    if v is self:
                        del self._all[k]
        if last:
            self.flush()

    def _on_client_error(self, err: KafkaError) -> None:
        log.warning("kafka producer: %s", err.str())

    def connect(self, timeout: float = 5.0) -> None:
        """Talk to the brokers now: an idempotent producer gets its producer id only once a
        broker connection is up, on a 500 ms retry timer, so a producer first used by the
        first change would hold that change ~0.5 s."""
        try:
            self.producer.list_topics(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - only a faster first write
            log.warning("kafka producer: no broker answered yet (%s); the first write may wait", exc)

    def on_delivery(self, topic: str) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                self.delivered += 1
                return
            self.failed += 1
            self.last_failure = f"{topic}: {err.str()}"
            self.metrics.on_kafka_error(topic, "produce", err.name())
            log.error("kafka delivery to %s failed: %s", topic, err.str())
        return report

    def check(self, seen: int, durable: bool) -> None:
        """Raise `DeliveryFailed` if records failed since the caller saw `seen` failures."""
        if self.failed > seen:
            then = ("the epoch holding them is not committed: a restart resumes before it and writes them "
                    "again" if durable else "a restart reads the input again (no recovery directory)")
            raise DeliveryFailed(
                f"{self.failed - seen} record(s) could not be written to Kafka (last: {self.last_failure}); "
                f"stopping so that nothing is lost: {then}. A broker outage longer than message.timeout.ms "
                "(KAFKA_PRODUCER_SETTINGS, librdkafka default 5 min) causes this")

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: list | None,
                on_delivery: Callable) -> None:
        p = self.producer
        while True:
            try:
                p.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                # Local queue full: serve delivery reports until there is room (backpressure).
                p.poll(0.05)
            except KafkaException as exc:
                self.metrics.on_kafka_error(topic, "produce", exc.args[0].name())
                log.error("kafka produce to %s failed: %s", topic, exc.args[0].str())
                return

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every message handed over so far is acknowledged (or failed)."""
        with self._flush_lock:
            t0 = time.monotonic()
            left = self.producer.flush(timeout)
            while left:
                log.warning("kafka producer: %d messages still unacknowledged after %.0fs; waiting",
                            left, time.monotonic() - t0)
                left = self.producer.flush(timeout)


def encode_change(change: Any, processed_at: str) -> bytes:
    """The change record plus `processed_at` (an ISO instant, formatted once per batch)."""
    rec = change.record()
    rec["processed_at"] = processed_at
    return orjson.dumps(rec)


def encode_dead_letter(dead: Any) -> tuple[bytes, list]:
    headers = [
        ("espresso-reason", dead.reason.encode()),
        ("espresso-detail", dead.detail.encode("utf-8", "replace")[:1000]),
        ("espresso-source", orjson.dumps(dead.source)),
    ]
    return bytes(dead.raw), headers


class _Part(StatefulSinkPartition):
    def __init__(self, sink: "_KafkaSink") -> None:
        self.sink = sink
        self.sp = SharedProducer.get(sink.cfg)
        self.report = self.sp.on_delivery(sink.topic)
        self.dirty = False
        self.failures_seen = self.sp.failed

    def write_batch(self, items: list) -> None:
        if not items:
            return
        self.sink.write(self.sp, items, self.report)
        self.sp.poll()
        self.dirty = True
        self.sp.check(self.failures_seen, self.sink.flush_on_snapshot)

    def snapshot(self) -> None:
        # End of an epoch: everything written in it must be durable before the epoch
        # is committed to the recovery store. Without recovery nothing is committed (a
        # restart reads the input from the beginning), so the flow need not wait.
        if self.dirty and self.sink.flush_on_snapshot:
            self.sp.flush()
            self.dirty = False
        self.sp.check(self.failures_seen, self.sink.flush_on_snapshot)
        return None

    def close(self) -> None:
        self.sp.release()


class _KafkaSink(FixedPartitionedSink):
    """Items are `(key, record)`: the key picks the sink partition (kept per contact)."""

    def __init__(self, cfg: KafkaConfig, topic: str, parts: int = SINK_PARTS, flush_on_snapshot: bool = True,
                 metrics: EspressoMetrics | None = None) -> None:
        self.cfg, self.topic, self.parts, self.flush_on_snapshot = cfg, topic, parts, flush_on_snapshot
        self._metrics = metrics

    @property
    def metrics(self) -> EspressoMetrics:
        """What this sink writes is recorded here (the process's metrics by default)."""
        if self._metrics is None:
            self._metrics = get_metrics()
        return self._metrics

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.parts)]

    def part_fn(self, item_key: str) -> int:
        return zlib.crc32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(self)

    def write(self, sp: SharedProducer, values: list, report: Callable) -> None:
        raise NotImplementedError

    @staticmethod
    def item_key(item: Any) -> str:
        raise NotImplementedError


class KafkaChangeSink(_KafkaSink):
    """`Change`s to the segment-changes topic, key `contact_id`."""

    @staticmethod
    def item_key(change: Any) -> str:
        return change.contact_id

    def write(self, sp: SharedProducer, values: list, report: Callable) -> None:
        now = format_ms(time.time_ns() // 1_000_000)
        topic = self.topic
        for ch in values:
            sp.produce(topic, encode_change(ch, now), ch.contact_id.encode(), None, report)
        m = self.metrics
        m.on_changes(values)  # a flow writing to this sink does not record its changes itself
        m.on_produced(topic, len(values))


class KafkaDeadLetterSink(_KafkaSink):
    """`DeadLetter`s to the dead-letter topic: original bytes, reason in headers."""

    @staticmethod
    def item_key(dead: Any) -> str:
        src = dead.source
        return f"{src.get('partition', '')}"

    def write(self, sp: SharedProducer, values: list, report: Callable) -> None:
        topic = self.topic
        for d in values:
            value, headers = encode_dead_letter(d)
            sp.produce(topic, value, None, headers, report)
        m = self.metrics
        for d in values:
            m.on_invalid(d.reason)
        m.on_produced(topic, len(values))


class KafkaRecordSink(_KafkaSink):
    """Campaign `Message`s or `Decision`s (anything with `contact_id` and `record()`), key `contact_id`."""

    @staticmethod
    def item_key(item: Any) -> str:
        return item.contact_id

    def write(self, sp: SharedProducer, values: list, report: Callable) -> None:
        topic = self.topic
        for item in values:
            sp.produce(topic, orjson.dumps(item.record()), item.contact_id.encode(), None, report)
        self.metrics.on_produced(topic, len(values))
