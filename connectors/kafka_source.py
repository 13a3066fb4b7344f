"""Kafka topic of contact events as a Bytewax source, one partition per Kafka partition.

Each Kafka partition is a Bytewax `StatefulSourcePartition`: a consumer `assign()`ed to
that partition (no consumer-group rebalancing, no committed offsets) starting at the
offset kept in the recovery snapshot, or at the beginning of the partition on a fresh
start. One poll emits ONE item, `(partition, RawBatch)`, so the per-partition intake sees
whole batches. Broker errors are logged and counted, never raised: a Kafka hiccup does
not stop the flow.

Idle partitions still emit an empty `RawBatch` every `idle_emit_s`, so the shards of an
idle partition keep evaluating with the idle-advancing watermark even if no timer
notification were pending (ShardLogic.notify_at does the precise wake-ups).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from flows import health
from flows.logic import RawBatch, wall_ms

from .kafka_config import KafkaConfig
from .topics import partitions_of

__all__ = ["KafkaEventSource"]

log = logging.getLogger(__name__)

_EOF = KafkaError._PARTITION_EOF


class _KafkaPartition(StatefulSourcePartition):
    def __init__(self, src: "KafkaEventSource", partition: int, resume_offset: int | None) -> None:
        self.src = src
        self.topic, self.partition = src.topic, partition
        self.key = str(partition)
        self.origin = {"topic": src.topic, "partition": partition}
        self.next_offset = OFFSET_BEGINNING if resume_offset is None else resume_offset
        conf = src.cfg.consumer(src.group_id, **({"enable.partition.eof": True} if src.stop_at_end else {}))
        conf["error_cb"] = self._on_client_error
        self.consumer = Consumer(conf)
        # assign() joins no group: the partition is ours for the life of the dataflow.
        self.consumer.assign([TopicPartition(self.topic, partition, self.next_offset)])
        self.tp = TopicPartition(self.topic, partition)
        self.eof = False
        self.first = True
        self.last_emit = 0.0
        self.last_lag = 0.0
        self.awake: datetime | None = None
        health.HEALTH.partition_built(self.topic, partition)
        log.info("reading %s[%d] from %s", self.topic, partition,
                 "the beginning" if resume_offset is None else f"offset {resume_offset}")

    def _on_client_error(self, err: KafkaError) -> None:
        health.count_source_error(self.topic, self.partition, err.name())
        log.warning("kafka consumer %s[%d]: %s", self.topic, self.partition, err.str())

    def next_batch(self) -> list:
        if self.eof or health.HEALTH.stopping:
            raise StopIteration()
        src = self.src
        msgs = self.consumer.consume(src.batch_size, src.poll_timeout_s)
        now = time.monotonic()
        records = []
        if msgs:
            # Fast path: no error in the batch (a value of None, a tombstone, is b"").
            records = [(m.value() or b"", m.offset()) for m in msgs if m.error() is None]
            if len(records) != len(msgs):
                records = self._with_errors(msgs)
            if records:
                self.next_offset = records[-1][1] + 1
        health.HEALTH.beat()
        if self.first:
            self.first = False
            health.HEALTH.partition_polled(self.topic, self.partition)
        if now - self.last_lag >= 1.0:
            self.last_lag = now
            self._report_lag()
        if records or now - self.last_emit >= src.idle_emit_s or self.eof:
            self.last_emit = now
            self.awake = None
            return [(self.key, RawBatch(self.key, records, self.origin, "offset", wall_ms()))]
        # Nothing read: poll again soon, without spinning a core.
        self.awake = datetime.now(timezone.utc) + timedelta(seconds=src.idle_poll_s)
        return []

    def _with_errors(self, msgs: list) -> list:
        records = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                records.append((msg.value() or b"", msg.offset()))
            elif err.code() == _EOF:
                if self.src.stop_at_end:
                    self.eof = True
            else:
                health.count_source_error(self.topic, self.partition, err.name())
                log.warning("kafka %s[%d]: %s", self.topic, self.partition, err.str())
        return records

    def next_awake(self) -> datetime | None:
        return self.awake

    def _report_lag(self) -> None:
        try:
            _low, high = self.consumer.get_watermark_offsets(self.tp, cached=True)
        except Exception:  # noqa: BLE001 - metrics only
            return
        if high is None or high < 0 or self.next_offset < 0:
            return
        health.set_consumer_lag(self.topic, self.partition, max(0, high - self.next_offset))

    def snapshot(self) -> int | None:
        return None if self.next_offset < 0 else self.next_offset

    def close(self) -> None:
        self.consumer.close()


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
                 stop_at_end: bool = False, partitions: Callable[[], list[int]] | None = None) -> None:
        self.cfg, self.topic, self.group_id = cfg, topic, group_id
        self.batch_size, self.poll_timeout_s = batch_size, poll_timeout_s
        self.idle_poll_s, self.idle_emit_s, self.stop_at_end = idle_poll_s, idle_emit_s, stop_at_end
        self._partitions = partitions

    def list_parts(self) -> list[str]:
        parts = self._partitions() if self._partitions else partitions_of(self.cfg, self.topic)
        health.HEALTH.source_listed()
        return [str(p) for p in parts]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        return _KafkaPartition(self, int(for_part), resume_state)
