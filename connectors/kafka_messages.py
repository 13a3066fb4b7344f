"""Kafka channel (topic `retargeting-messages`) and a record writer for dead letters/decisions.

`KafkaMessageChannel` produces the message record, key `contact_id`, with an idempotent
producer (`enable.idempotence`, `acks=all`): librdkafka's own retries write no duplicate in
the partition. `send` resolves when the broker acknowledges (delivery callback); nothing
is flushed per message: the producer's background work is driven by `poll(0)` from the
event loop. A delivery error after `delivery_timeout_s` becomes reason `kafka_<error>`.

`KafkaRecordWriter` is a plain thread-safe producer of JSON records with a poll thread, for
`Sender(dead_letter=..., on_result=...)`: dead letters go to `retargeting-messages-dlq` with
header `espresso-reason`, decisions to `retargeting-decisions`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from connectors.delivery import DeliveryConfigError, SendResult

__all__ = [
    "DECISIONS_TOPIC",
    "MESSAGES_DLQ_TOPIC",
    "MESSAGES_TOPIC",
    "KafkaMessageChannel",
    "KafkaMessagesConfig",
    "KafkaRecordWriter",
    "kafka_settings_from_env",
]

log = logging.getLogger(__name__)

MESSAGES_TOPIC = "retargeting-messages"
MESSAGES_DLQ_TOPIC = "retargeting-messages-dlq"
DECISIONS_TOPIC = "retargeting-decisions"

_ENV_SETTINGS = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
}


def kafka_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security settings from the `KAFKA_*` variables of docs/interfaces.md."""
    env = {} if environ is None else environ  # the caller (commands/) reads the environment
    return {setting: env[var] for var, setting in _ENV_SETTINGS.items() if env.get(var)}


def _masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if "password" in k or "secret" in k else v) for k, v in settings.items()}


@dataclass(frozen=True)
class KafkaMessagesConfig:
    """Producer of message records; `settings` are extra librdkafka settings (security...)."""

    bootstrap_servers: str
    topic: str = MESSAGES_TOPIC
    settings: Mapping[str, Any] = field(default_factory=dict)
    delivery_timeout_s: float = 30.0
    linger_ms: int = 5
    name: str = "kafka"

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise DeliveryConfigError('"bootstrap_servers" must be set (KAFKA_BOOTSTRAP_SERVERS)')
        if not self.topic:
            raise DeliveryConfigError('"topic" must be set')
        if self.delivery_timeout_s <= 0:
            raise DeliveryConfigError(f'"delivery_timeout_s" must be > 0: {self.delivery_timeout_s}')

    def __repr__(self) -> str:
        return (f"KafkaMessagesConfig(bootstrap_servers={self.bootstrap_servers!r}, topic={self.topic!r}, "
                f"settings={_masked(self.settings)!r})")

    def producer_settings(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": self.linger_ms,
            "message.timeout.ms": int(self.delivery_timeout_s * 1000),
            **self.settings,
        }


class KafkaMessageChannel:
    """Produces each message record to `config.topic`; used from one event loop."""

    def __init__(self, config: KafkaMessagesConfig) -> None:
        self.config = config
        self.name = config.name
        self._producer: Producer | None = None
        self._poller: asyncio.Task | None = None
        self._pending = 0
        self._work = None  # asyncio.Event, made on the loop

    def __repr__(self) -> str:
        return f"KafkaMessageChannel({self.config!r})"

    @property
    def max_duration_s(self) -> float:
        return self.config.delivery_timeout_s + 5.0

    async def start(self) -> None:
        if self._producer is not None:
            return
        try:
            self._producer = Producer(self.config.producer_settings())
        except KafkaException as exc:
            raise DeliveryConfigError(f"kafka channel {self.name}: {exc}") from exc
        self._work = asyncio.Event()
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        """Serve delivery callbacks while sends are pending; sleep otherwise."""
        assert self._producer is not None and self._work is not None
        while True:
            if not self._pending:
                self._work.clear()
                await self._work.wait()
            self._producer.poll(0)
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, self.config.delivery_timeout_s)
            self._producer = None

    async def send(self, message: Mapping[str, Any]) -> SendResult:
        if self._producer is None:
            await self.start()
        assert self._producer is not None and self._work is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if not done.done():
                done.set_result(err)

        key = message.get("contact_id")
        value = orjson.dumps(message)
        headers = [("espresso-message-id", str(message.get("message_id", "")).encode())]
        while True:
            try:
                self._producer.produce(self.config.topic, value=value, key=None if key is None else str(key),
                                       headers=headers, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0)
                await asyncio.sleep(0.01)
            except KafkaException as exc:
                return SendResult.failure(_reason(exc.args[0]), str(exc.args[0].str()), 1)
        self._pending += 1
        self._work.set()
        try:
            err = await done
        finally:
            self._pending -= 1
        if err is None:
            return SendResult.success()
        return SendResult.failure(_reason(err), err.str(), 1)


def _reason(err: KafkaError) -> str:
    return "kafka_" + err.name().strip("_").lower()


class KafkaRecordWriter:
    """Thread-safe JSON record producer with its own poll thread (dead letters, decisions)."""

    def __init__(self, bootstrap_servers: str, settings: Mapping[str, Any] | None = None) -> None:
        if not bootstrap_servers:
            raise DeliveryConfigError('"bootstrap_servers" must be set (KAFKA_BOOTSTRAP_SERVERS)')
        conf = {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all",
                "linger.ms": 20, **(settings or {})}
        try:
            self._producer = Producer(conf)
        except KafkaException as exc:
            raise DeliveryConfigError(f"kafka record writer: {exc}") from exc
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="espresso-kafka-records", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors += 1
            log.error("kafka record writer: lost a record for %s: %s", msg.topic(), err.str())

    def write(self, topic: str, record: Mapping[str, Any], key: str | None = None,
              headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce one record; waits while the local queue is full."""
        value = orjson.dumps(record)
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
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
        """Records still not acknowledged after `timeout` seconds."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> int:
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join()
        return left
