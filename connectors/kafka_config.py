"""Kafka connection settings of the live flow: bootstrap servers plus security.

Security settings come from the `KAFKA_*` variables of docs/interfaces.md and are passed
verbatim to librdkafka; secrets never appear in `repr()` or logs.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from state.errors import ConfigError

__all__ = ["KafkaConfig", "KafkaConfigError", "SECURITY_ENV", "security_from_env", "masked", "parse_settings",
           "PRODUCER_ENV", "CONSUMER_ENV"]

#: environment variable -> librdkafka setting
SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
}

_SECRET_WORDS = ("password", "secret", "key.pem", "token")

#: Extra librdkafka settings for tuning, "name=value,name=value" (e.g. fetch.wait.max.ms=10).
PRODUCER_ENV, CONSUMER_ENV = "KAFKA_PRODUCER_SETTINGS", "KAFKA_CONSUMER_SETTINGS"


class _Repeats(logging.Filter):
    """librdkafka logs a broker that does not answer several times a second: each kind of
    line (digits aside) passes once a minute, so a one-line error is not buried under them."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s, self.last = every_s, {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())[:200]
        now = time.monotonic()
        if now - self.last.get(key, -self.every_s) < self.every_s:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


#: Where librdkafka's own log lines go (instead of straight to stderr), rate limited.
CLIENT_LOG = logging.getLogger("espresso.kafka.client")
CLIENT_LOG.addFilter(_Repeats())


class KafkaConfigError(ConfigError):
    """Kafka settings that cannot work; the message names the flag/variable and the fix."""


def security_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security settings from the `KAFKA_*` variables that are set and non-empty."""
    env = {} if environ is None else environ  # the caller (commands/) reads the environment
    return {setting: env[var] for var, setting in SECURITY_ENV.items() if env.get(var)}


def parse_settings(text: str, var: str) -> dict[str, str]:
    """`name=value,name=value` -> {name: value}; errors name the variable."""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise KafkaConfigError(f"{var}: expected name=value[,name=value...], got {item!r}")
        out[name.strip()] = value.strip()
    return out


def masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy fit for logs: values of secret settings replaced by `***`."""
    return {k: ("***" if any(w in k for w in _SECRET_WORDS) else v) for k, v in settings.items()}


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are and how to talk to them; `settings` are extra librdkafka settings."""

    bootstrap_servers: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    client_id: str = "espresso"
    producer_settings: Mapping[str, Any] = field(default_factory=dict)
    consumer_settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not self.bootstrap_servers.strip():
            raise KafkaConfigError(
                "no Kafka bootstrap servers: pass --bootstrap-servers HOST:PORT[,HOST:PORT] "
                "or set KAFKA_BOOTSTRAP_SERVERS (`espresso demo` starts an embedded broker)")
        proto = str(self.settings.get("security.protocol", "plaintext")).lower()
        if proto not in ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"):
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL={proto!r} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl")
        if proto.startswith("sasl") and "sasl.mechanism" in self.settings and \
                str(self.settings["sasl.mechanism"]).upper() in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and \
                not (self.settings.get("sasl.username") and self.settings.get("sasl.password")):
            raise KafkaConfigError(
                f"KAFKA_SASL_MECHANISM={self.settings['sasl.mechanism']} needs KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD")

    @classmethod
    def from_env(cls, bootstrap_servers: str | None = None, environ: Mapping[str, str] | None = None,
                 **kw: Any) -> "KafkaConfig":
        env = {} if environ is None else environ  # the caller (commands/) reads the environment
        servers = bootstrap_servers or env.get("KAFKA_BOOTSTRAP_SERVERS", "")
        kw.setdefault("producer_settings", parse_settings(env.get(PRODUCER_ENV, ""), PRODUCER_ENV))
        kw.setdefault("consumer_settings", parse_settings(env.get(CONSUMER_ENV, ""), CONSUMER_ENV))
        return cls(servers, security_from_env(env), **kw)

    def __repr__(self) -> str:
        return (f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, "
                f"settings={masked(self.settings)!r}, client_id={self.client_id!r}"
                + (f", producer_settings={masked(self.producer_settings)!r}" if self.producer_settings else "")
                + (f", consumer_settings={masked(self.consumer_settings)!r}" if self.consumer_settings else "")
                + ")")

    __str__ = __repr__

    # -- librdkafka configurations -----------------------------------------
    def common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, "client.id": self.client_id, "logger": CLIENT_LOG,
                **self.settings}

    def consumer(self, group_id: str, **extra: Any) -> dict[str, Any]:
        """A consumer used with `assign()`: no group rebalancing, no committed offsets."""
        conf = self.common()
        conf.update({
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
            "socket.nagle.disable": True,
        })
        conf.update(self.consumer_settings)
        conf.update(extra)
        return conf

    def producer(self, **extra: Any) -> dict[str, Any]:
        """Idempotent producer tuned for latency: a retry never writes a duplicate in a partition."""
        conf = self.common()
        conf.update({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "socket.nagle.disable": True,
        })
        conf.update(self.producer_settings)
        conf.update(extra)
        return conf

    def admin(self) -> dict[str, Any]:
        return self.common()
