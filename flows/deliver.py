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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.consume import next_batch
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


# -- the loop ------------------------------------------------------------------------
_stop_requested = False


def request_stop(reason: str) -> None:
    """Finish the current batch and stop; a second request aborts."""
    global _stop_requested
    if _stop_requested:
        raise KeyboardInterrupt
    _stop_requested = True
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
        idempotency = RedisIdempotency(IdempotencyConfig(config.redis_url, lease_s=config.claim_lease_s))
        writer = KafkaRecordWriter(config.kafka)
        sender = Sender(SenderConfig(max_in_flight=config.max_in_flight,
                                     max_queued=max(config.max_in_flight, 2 * config.batch_size),
                                     name="deliver"),
                        idempotency, channels,
                        on_result=_observed(writer.decision_callback(config.decisions_topic), writer.metrics),
                        dead_letter=writer.dead_letter_callback(config.dlq_topic))
    except DeliveryConfigError as exc:
        hint = " (the lease is --claim-lease / ESPRESSO_DELIVER_CLAIM_LEASE)" if "lease" in str(exc) else ""
        raise DeliverConfigError(f"{exc}{hint}") from exc
    dead_letter = writer.dead_letter_callback(config.dlq_topic)
    stats = DeliverStats()
    pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset, not yet committed
    assigned: set[int] = set()
    at_end: set[int] = set()

    def commit(consumer: Consumer) -> None:
        """Flush the sender and the record writer, then commit what the batch consumed."""
        if not pending:
            return
        if not sender.flush(config.flush_timeout_s):
            raise RuntimeFailure(f"the sender did not finish the batch within {config.flush_timeout_s}s; "
                                     "offsets not committed (the batch is re-read on restart)")
        left = writer.flush(30.0)
        if left:
            raise RuntimeFailure(f"{left} decision/dead-letter records not acknowledged by Kafka within 30s; "
                                     "offsets not committed (check the brokers and --decisions-topic/--dlq-topic)")
        if writer.errors:
            raise RuntimeFailure(f"{writer.errors} decision/dead-letter record(s) could not be written to Kafka "
                                     "(see the log); offsets not committed: a restart reads the batch again (sent "
                                     "messages are not sent twice)")
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
        pending.clear()
        stats.committed_batches += 1

    def on_assign(consumer: Consumer, parts: list) -> None:
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
    consumer.subscribe([config.messages_topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        while not _stop_requested:
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
                sender.submit(message)
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


def _observed(write_decision, m):
    """Every delivery result is a decision record and metrics: its outcome, and for a message
    sent the send latency and the delivery of its campaign, variant and step."""

    def on_result(decision: dict) -> None:
        channel = decision.get("channel") or "other"
        campaign = decision.get("campaign_id") or "other"
        m.on_message(campaign, channel, decision.get("outcome") or "failed")
        if decision.get("outcome") == "sent":
            m.on_delivered(campaign, _text(decision.get("variant")), _text(decision.get("step_id")))
            if decision.get("latency_ms") is not None:
                m.observe_send(channel, decision["latency_ms"] / 1000.0)
        write_decision(decision)
    return on_result


def _text(value: object) -> str | None:
    """A label from a message record field: a string, else none (a record we did not write)."""
    return value if isinstance(value, str) else None
