"""Kafka topic of contact events as a Bytewax source, one partition per Kafka partition.

Each Kafka partition is a Bytewax `StatefulSourcePartition` reading from the offset kept in
the recovery snapshot, or from the beginning of the partition on a fresh start. The
partitions a worker owns share ONE consumer (`_WorkerConsumer`): `assign()`ed partitions
(no consumer-group rebalancing, no committed offsets), its messages sorted into one buffer
per partition. One consumer per partition multiplies fetch sessions, connections and
prefetch buffers by the partitions per worker; on the test broker four consumers took its
one-hop p99 from 35 ms to 220 ms within 20 s at 10k messages/s. One poll emits ONE item,
`(partition, RawBatch)`, so the per-partition intake sees whole batches. Broker errors
are logged and counted, never raised: a Kafka hiccup does not stop the flow.

Each batch says whether the partition is caught up (nothing more to read at the last
fetch: the log end that fetch reported). A partition that reaches the end with no new
records emits one empty batch saying so, and an idle partition an empty batch every
`idle_emit_s`, so its shards settle its latest instant and let idle time pass
(state/timekeeping.py; ShardLogic.notify_at does the precise wake-ups).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from metrics.health import HEALTH
from metrics.registry import EspressoMetrics, get_metrics
from state.timeutil import wall_ms

from .batch import RawBatch
from .kafka_config import KafkaConfig
from .topics import partitions_of

__all__ = ["KafkaEventSource"]

log = logging.getLogger(__name__)

_EOF = KafkaError._PARTITION_EOF


class _WorkerConsumer:
    """The one consumer of a worker thread: partitions are added and removed as Bytewax
    builds and closes them; a partition whose buffer runs ahead is paused until drained."""

    def __init__(self, src: "KafkaEventSource") -> None:
        self.src, self.topic = src, src.topic
        conf = src.cfg.consumer(src.group_id, **({"enable.partition.eof": True} if src.stop_at_end else {}))
        conf["error_cb"] = self._on_client_error
        if "max.partition.fetch.bytes" not in src.cfg.consumer_settings:
            # One fetch request serves all the worker's partitions: bigger shares per
            # partition keep a catch-up as fast as with a consumer per partition.
            conf["max.partition.fetch.bytes"] = 4 << 20
        self.consumer = Consumer(conf)
        self._know_leaders()
        self.buffers: dict[int, list] = {}
        self.eof: set[int] = set()
        self.paused: set[int] = set()
        self.limit = 4 * src.batch_size

    def _on_client_error(self, err: KafkaError) -> None:
        self.src.metrics.on_kafka_error(self.topic, "consume", err.name())
        log.warning("kafka consumer %s: %s", self.topic, err.str())

    def _know_leaders(self) -> None:
        """Fetch the topic's metadata before assigning: a partition assigned while its leader
        is unknown waits for librdkafka's 500 ms offset-query retry timer, so the first
        events after a start would wait half a second. All topics, not this one by name: a
        request by name may create the topic on brokers that auto-create."""
        try:
            self.consumer.list_topics(timeout=5)
        except Exception as exc:  # noqa: BLE001 - only a faster start; assign works anyway
            log.warning("kafka consumer %s: no metadata yet (%s); the first fetch may start late", self.topic, exc)

    def add(self, partition: int, offset: int) -> None:
        self.buffers[partition] = []
        self.consumer.incremental_assign([TopicPartition(self.topic, partition, offset)])

    def remove(self, partition: int) -> bool:
        """Forget `partition`; True when the consumer has none left (and is closed)."""
        self.buffers.pop(partition, None)
        self.eof.discard(partition)
        self.paused.discard(partition)
        if self.buffers:
            self.consumer.incremental_unassign([TopicPartition(self.topic, partition)])
            return False
        self.consumer.close()
        return True

    def take(self, partition: int, next_offset: int) -> tuple[list, bool]:
        """Up to `batch_size` messages of `partition`, fetching when its buffer is empty, and
        whether they are all there was: caught up with the log end of the last fetch."""
        buf = self.buffers[partition]
        if not buf:
            self._fill()
        n = self.src.batch_size
        if len(buf) <= n:
            out = buf[:]
            buf.clear()
        else:
            out = buf[:n]
            del buf[:n]
        if partition in self.paused and len(buf) < self.src.batch_size:
            self.paused.discard(partition)
            self.consumer.resume([TopicPartition(self.topic, partition)])
        return out, not buf and self._at_end(partition, out[-1].offset() + 1 if out else next_offset)

    def _at_end(self, partition: int, position: int) -> bool:
        """Whether `position` is the log end the last fetch response reported (librdkafka
        caches it per partition as it parses a response, before handing out its messages)."""
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
        except Exception:  # noqa: BLE001 - not known yet: not caught up
            return False
        if high is None or high < 0:
            return False
        return (position if position >= 0 else low) >= high

    def _fill(self) -> None:
        buffers = self.buffers
        for m in self.consumer.consume(self.src.batch_size, self.src.poll_timeout_s):
            err = m.error()
            part = m.partition()
            if err is None:
                if part in buffers:  # else: a message of a partition just removed
                    buffers[part].append(m)
            elif err.code() == _EOF:
                if self.src.stop_at_end and part in buffers:
                    self.eof.add(part)
            else:
                self.src.metrics.on_kafka_error(self.topic, "consume", err.name())
                log.warning("kafka %s[%s]: %s", self.topic, part, err.str())
        for part, buf in buffers.items():
            if len(buf) > self.limit and part not in self.paused:
                self.paused.add(part)
                self.consumer.pause([TopicPartition(self.topic, part)])


class _KafkaPartition(StatefulSourcePartition):
    def __init__(self, src: "KafkaEventSource", partition: int, resume_offset: int | None) -> None:
        self.src = src
        self.topic, self.partition = src.topic, partition
        self.key = str(partition)
        self.origin = {"topic": src.topic, "partition": partition}
        self.next_offset = OFFSET_BEGINNING if resume_offset is None else resume_offset
        self.shared = src.worker_consumer()
        # assign() joins no group: the partition is ours for the life of the dataflow.
        self.shared.add(partition, self.next_offset)
        self.tp = TopicPartition(self.topic, partition)
        self.eof = False
        self.told_caught_up = False  # the last batch emitted said "caught up"
        self.first = True
        self.last_emit = 0.0
        self.last_lag = 0.0
        self.awake: datetime | None = None
        HEALTH.partition_built(self.topic, partition)
        log.info("reading %s[%d] from %s", self.topic, partition,
                 "the beginning" if resume_offset is None else f"offset {resume_offset}")

    def next_batch(self) -> list:
        if self.eof or HEALTH.stopping:
            raise StopIteration()
        src, shared = self.src, self.shared
        msgs, caught_up = shared.take(self.partition, self.next_offset)
        now = time.monotonic()
        # A value of None (a tombstone) is b"".
        records = [(m.value() or b"", m.offset()) for m in msgs]
        if records:
            self.next_offset = records[-1][1] + 1
        elif self.partition in shared.eof:
            self.eof = True
        HEALTH.beat()
        if self.first:
            self.first = False
            HEALTH.partition_polled(self.topic, self.partition)
        if now - self.last_lag >= 1.0:
            self.last_lag = now
            self._report_lag()
        # Reaching the log end is news even with no records: the shards may then settle
        # the partition's latest instant (state/timekeeping.py).
        if records or (caught_up and not self.told_caught_up) or now - self.last_emit >= src.idle_emit_s or self.eof:
            self.last_emit = now
            self.awake = None
            self.told_caught_up = caught_up
            return [(self.key, RawBatch(self.key, records, self.origin, "offset", wall_ms(), caught_up=caught_up))]
        # Nothing read: poll again soon, without spinning a core.
        self.awake = datetime.now(timezone.utc) + timedelta(seconds=src.idle_poll_s)
        return []

    def next_awake(self) -> datetime | None:
        return self.awake

    def _report_lag(self) -> None:
        try:
            _low, high = self.shared.consumer.get_watermark_offsets(self.tp, cached=True)
        except Exception:  # noqa: BLE001 - metrics only
            return
        if high is None or high < 0 or self.next_offset < 0:
            return
        self.src.metrics.set_consumer_lag(self.topic, self.partition, max(0, high - self.next_offset))

    def snapshot(self) -> int | None:
        return None if self.next_offset < 0 else self.next_offset

    def close(self) -> None:
        self.src.release(self.shared, self.partition)


class KafkaEventSource(FixedPartitionedSource):
    """Contact events from `topic`; the snapshot of a partition is its next offset.

    - `batch_size`: most messages per poll (one RawBatch);
    - `poll_timeout_s`: how long one poll may wait for messages (keep it small: a worker
      polls its partitions in turn);
    - `idle_poll_s`: pause before polling a partition that had nothing;
    - `idle_emit_s`: an idle partition still emits an empty batch this often;
    - `stop_at_end`: end the partition once it reaches the end of the topic (tests, bench).
    """

    def __init__(self, cfg: KafkaConfig, topic: str, group_id: str = "espresso", batch_size: int = 5000,
                 poll_timeout_s: float = 0.0, idle_poll_s: float = 0.002, idle_emit_s: float = 1.0,
                 stop_at_end: bool = False, partitions: Callable[[], list[int]] | None = None,
                 metrics: EspressoMetrics | None = None) -> None:
        self.cfg, self.topic, self.group_id = cfg, topic, group_id
        self._metrics = metrics
        self.batch_size, self.poll_timeout_s = batch_size, poll_timeout_s
        self.idle_poll_s, self.idle_emit_s, self.stop_at_end = idle_poll_s, idle_emit_s, stop_at_end
        self._partitions = partitions
        self._consumers: dict[int, _WorkerConsumer] = {}  # by worker thread
        self._lock = threading.Lock()

    @property
    def metrics(self) -> EspressoMetrics:
        """Consumer errors and lag are recorded here (the process's metrics by default)."""
        if self._metrics is None:
            self._metrics = get_metrics()
        return self._metrics

    def worker_consumer(self) -> _WorkerConsumer:
        """The consumer of the calling worker thread (Bytewax runs a worker on one thread)."""
        with self._lock:
            wc = self._consumers.get(threading.get_ident())
            if wc is None:
                wc = self._consumers[threading.get_ident()] = _WorkerConsumer(self)
            return wc

    def release(self, wc: _WorkerConsumer, partition: int) -> None:
        with self._lock:
            if wc.remove(partition):
                self._consumers = {k: v for k, v in self._consumers.items() if v is not wc}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_consumers"], state["_lock"] = {}, None  # live clients stay in their process
        state["_metrics"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def list_parts(self) -> list[str]:
        parts = self._partitions() if self._partitions else partitions_of(self.cfg, self.topic)
        HEALTH.source_listed()
        return [str(p) for p in parts]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        return _KafkaPartition(self, int(for_part), resume_state)
