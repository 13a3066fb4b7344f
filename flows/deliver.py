"""`espresso deliver`: send the retargeting messages of a Kafka topic, each exactly once.

    retargeting-messages ──▶ consumer (group --group) ──▶ Sender (Redis idempotency, channels)
                                                            ├─▶ decision records  (--decisions-topic)
                                                            └─▶ dead letters      (--dlq-topic)

Input is at-least-once: the offsets of a consumed batch are committed only after the sender
has a decision for every message of the batch and the decision/dead-letter records are
acknowledged by Kafka. A crash re-reads at most the uncommitted batch; the Redis
idempotency keys make the re-read messages `skipped_duplicate` instead of a second send
(docs/delivery.md, "Exactly once").

Channels are built by the caller (commands/deliver.py, from `ESPRESSO_WEBHOOK_URL` and
`ESPRESSO_SMTP_HOST`).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.consume import next_batch
from metrics.health import DELIVER_HEALTH
from state.errors import ConfigError, RuntimeFailure

__all__ = ["DeliverConfig", "DeliverConfigError", "DeliverStats", "deliver", "next_batch", "request_stop"]

log = logging.getLogger("espresso.deliver")


class DeliverConfigError(ConfigError):
    """A setting of `espresso deliver` that cannot work; names the flag, the variable and the fix."""


@dataclass(frozen=True)
class DeliverConfig:
    kafka: Any  # connectors.kafka_config.KafkaConfig
    redis_url: str
    messages_topic: str = "retargeting-messages"
    decisions_topic: str = "retargeting-decisions"
    dlq_topic: str = "retargeting-messages-dlq"
    group_id: str = "espresso-deliver"
    batch_size: int = 500
    max_in_flight: int = 64
    flush_timeout_s: float = 300.0
    stop_at_end: bool = False
    claim_lease_s: float = 300.0  # how long a dead sender's claims hold their messages back

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DeliverConfigError(f"--batch-size (ESPRESSO_DELIVER_BATCH_SIZE) must be >= 1: {self.batch_size}")
        if self.max_in_flight < 1:
            raise DeliverConfigError(
                f"--max-in-flight (ESPRESSO_DELIVER_MAX_IN_FLIGHT) must be >= 1: {self.max_in_flight}")
        topics = {self.messages_topic, self.decisions_topic, self.dlq_topic}
        if len(topics) != 3:
            raise DeliverConfigError(
                "--messages-topic, --decisions-topic and --dlq-topic must be three different topics: "
                f"{self.messages_topic!r}, {self.decisions_topic!r}, {self.dlq_topic!r}")


# commit errors meaning this process is no longer the partitions' owner
_LOST_MEMBERSHIP = frozenset({25, 22, 27, -142})  # UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
#                                                  REBALANCE_IN_PROGRESS, librdkafka's _ASSIGNMENT_LOST

# -- the loop ------------------------------------------------------------------------
_stop_requested = False


def request_stop(reason: str) -> None:
    """Finish the current batch and stop; a second request aborts."""
    global _stop_requested
    if _stop_requested:
        raise KeyboardInterrupt
    _stop_requested = True
    DELIVER_HEALTH.stopping = True
    log.info("espresso deliver: %s, finishing the current batch", reason)


@dataclass
class DeliverStats:
    consumed: int = 0
    invalid: int = 0
    committed_batches: int = 0


def deliver(config: DeliverConfig, channels: Mapping[str, Any]) -> DeliverStats:
    """Consume, send, commit after flush; until a stop signal (or the end, with `stop_at_end`)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from connectors.delivery import DeliveryConfigError, SendResult
    from connectors.idempotency import IdempotencyConfig, RedisIdempotency
    from connectors.kafka_messages import KafkaRecordWriter
    from connectors.sender import Sender, SenderConfig, dead_letter_record

    if not channels:
        raise DeliverConfigError("no delivery channel configured (docs/delivery.md)")
    try:
        writer = KafkaRecordWriter(config.kafka)
        observed = _Observed(writer.decision_callback(config.decisions_topic), writer.metrics)
        idempotency = RedisIdempotency(IdempotencyConfig(config.redis_url, lease_s=config.claim_lease_s))
        # a channel posting batches needs several batches' worth of sends running to fill them
        widest = max((getattr(c, "batch_size", 1) for c in channels.values()), default=1)
        in_flight = max(config.max_in_flight, 4 * widest)
        if in_flight > config.max_in_flight:
            log.info("espresso deliver: %d sends in flight (4 batches of %d)", in_flight, widest)
        sender = Sender(SenderConfig(max_in_flight=in_flight,
                                     max_queued=max(in_flight, 2 * config.batch_size),
                                     name="deliver"),
                        idempotency, channels,
                        on_result=observed.on_result,
                        dead_letter=writer.dead_letter_callback(config.dlq_topic))
    except DeliveryConfigError as exc:
        hint = " (the lease is --claim-lease / ESPRESSO_DELIVER_CLAIM_LEASE)" if "lease" in str(exc) else ""
        raise DeliverConfigError(f"{exc}{hint}") from exc
    dead_letter = writer.dead_letter_callback(config.dlq_topic)
    stats = DeliverStats()
    pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset, not yet committed
    assigned: set[int] = set()
    at_end: set[int] = set()
    messages: list[dict] = []  # consumed, not yet handed to the sender

    def commit(consumer: Consumer) -> None:
        """Flush the sender and the record writer, then commit what the batch consumed."""
        if not pending:
            return
        if messages:
            sender.submit_many(messages)
            messages.clear()
        deadline = time.monotonic() + config.flush_timeout_s
        while not sender.flush(min(1.0, max(0.0, deadline - time.monotonic()))):
            DELIVER_HEALTH.beat()  # waiting for the provider or Redis is not a stall
            if time.monotonic() < deadline and sender.alive():
                continue
            raise RuntimeFailure(f"the sender did not finish the batch within {config.flush_timeout_s}s; "
                                     "offsets not committed (the batch is re-read on restart)")
        observed.publish()
        left = writer.flush(30.0)
        if left:
            raise RuntimeFailure(f"{left} decision/dead-letter records not acknowledged by Kafka within 30s; "
                                     "offsets not committed (check the brokers and --decisions-topic/--dlq-topic)")
        if writer.errors:
            raise RuntimeFailure(f"{writer.errors} decision/dead-letter record(s) could not be written to Kafka "
                                     "(see the log); offsets not committed: a restart reads the batch again (sent "
                                     "messages are not sent twice)")
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if getattr(err, "code", lambda: None)() not in _LOST_MEMBERSHIP:
                raise
            # The group moved on without us (a session timeout, a rebalance): the batch is done
            # but its offsets stay where they were. The partitions' owner reads it again and
            # skips what was sent (Redis keys); stopping here would only add a restart.
            log.warning("espresso deliver: offsets of a finished batch not committed (%s): the group "
                        "rebalanced; its messages are skipped as duplicates when read again", err.str())
            pending.clear()
            return
        for tp in offsets:  # how far behind: the high watermark of the last fetch, no request
            try:
                high = consumer.get_watermark_offsets(tp, cached=True)[1]
            except Exception:  # noqa: BLE001 - metrics only
                continue
            if high is not None and high >= 0:
                writer.metrics.set_consumer_lag(tp.topic, tp.partition, max(0, high - tp.offset))
        pending.clear()
        stats.committed_batches += 1

    def on_assign(consumer: Consumer, parts: list) -> None:
        DELIVER_HEALTH.joined = True
        assigned.update(tp.partition for tp in parts)
        log.info("espresso deliver: assigned %s", sorted(tp.partition for tp in parts))

    def on_revoke(consumer: Consumer, parts: list) -> None:
        try:
            commit(consumer)  # finish what we consumed before another member takes over
        except Exception:
            log.exception("espresso deliver: commit at revocation failed")
        for tp in parts:
            assigned.discard(tp.partition)
            at_end.discard(tp.partition)
            writer.metrics.set_consumer_lag(tp.topic, tp.partition, 0)  # its new owner reports it

    conf = config.kafka.consumer(config.group_id, **{"enable.partition.eof": True})
    if "fetch.wait.max.ms" not in config.kafka.consumer_settings:  # KAFKA_CONSUMER_SETTINGS wins
        conf.pop("fetch.wait.max.ms", None)
    try:
        consumer = Consumer(conf)
    except KafkaException as exc:
        raise DeliverConfigError(f"Kafka consumer: {exc} (check KAFKA_CONSUMER_SETTINGS and KAFKA_* security)") \
            from exc
    md = consumer.list_topics(timeout=15)
    if config.messages_topic not in md.topics or md.topics[config.messages_topic].error is not None:
        consumer.close()
        writer.close(5)
        raise DeliverConfigError(f"topic {config.messages_topic!r} (--messages-topic / ESPRESSO_MESSAGES_TOPIC) "
                                 f"does not exist on {config.kafka.bootstrap_servers}: create it or fix the name")

    global _stop_requested
    _stop_requested = False
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in previous:
        signal.signal(s, lambda signum, _frame: request_stop(f"{signal.Signals(signum).name} received"))
    sender.start()
    DELIVER_HEALTH.reset(store_down=lambda: sender.stats().store_down, sender_alive=sender.alive)
    consumer.subscribe([config.messages_topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        while not _stop_requested:
            DELIVER_HEALTH.beat()
            batch = next_batch(consumer, config.batch_size, 0.5)
            for m in batch:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    if err.fatal():
                        raise RuntimeFailure(f"Kafka: {err.str()}")
                    log.warning("espresso deliver: Kafka: %s", err.str())
                    continue
                at_end.discard(m.partition())
                pending[(m.topic(), m.partition())] = m.offset() + 1
                stats.consumed += 1
                try:
                    message = orjson.loads(m.value() or b"")
                except orjson.JSONDecodeError:
                    message = None
                if not isinstance(message, dict):
                    stats.invalid += 1
                    raw = (m.value() or b"").decode("utf-8", "replace")
                    dead_letter(dead_letter_record({"raw": raw}, SendResult.failure(
                        "bad_message", f"not a JSON object at {m.topic()}[{m.partition()}]@{m.offset()}", 0), ""))
                    continue
                messages.append(message)
            if messages:
                sender.submit_many(messages)
                messages.clear()
            commit(consumer)
            if config.stop_at_end and assigned and assigned <= at_end and not pending:
                break
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        try:
            commit(consumer)
        finally:
            consumer.close()
            sender.close(config.flush_timeout_s)
            writer.close(30.0)
    st = sender.stats()
    log.info("espresso deliver: stopped; consumed %d, sent %d, failed %d, duplicates %d, invalid %d",
             stats.consumed, st.sent, st.failed, st.duplicates, stats.invalid)
    return stats


class _Observed:
    """Every delivery result is a decision record and metrics: its outcome, and for a message
    sent the send latency and the delivery of its campaign, variant and step.

    The record is written at once; the metrics are counted here and published by `publish()`,
    which deliver calls before each commit (when the sender is idle): a label lookup per
    message cost more than the rest of recording it."""

    def __init__(self, write_decision, metrics) -> None:
        self._write = write_decision
        self._metrics = metrics
        self._counts: dict[tuple, int] = {}
        self._latencies: dict[str, list[float]] = {}

    def on_result(self, decision: dict) -> None:
        outcome = decision.get("outcome") or "failed"
        channel = decision.get("channel") or "other"
        key = (decision.get("campaign_id") or "other", channel, outcome,
               _text(decision.get("variant")), _text(decision.get("step_id")))
        self._counts[key] = self._counts.get(key, 0) + 1
        if outcome == "sent" and decision.get("latency_ms") is not None:
            self._latencies.setdefault(channel, []).append(decision["latency_ms"] / 1000.0)
        self._write(decision)

    def publish(self) -> None:
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        m = self._metrics
        for (campaign, channel, outcome, variant, step), n in counts.items():
            m.on_message(campaign, channel, outcome, n)
            if outcome == "sent":
                m.on_delivered(campaign, variant, step, n)
        for channel, values in latencies.items():
            m.observe_sends(channel, values)


def _text(value: object) -> str | None:
    """A label from a message record field: a string, else none (a record we did not write)."""
    return value if isinstance(value, str) else None
