"""`espresso deliver`: settings and channels from the command line and environment, then the loop."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Annotated, Any, Mapping

from pydantic import AfterValidator, BaseModel, ConfigDict

from state.errors import ConfigError, RuntimeFailure

from .settings import Count, Duration, Opt, Port, add_arguments, load

__all__ = ["DeliverSettings", "add_deliver_args", "config_from_args", "build_channels", "cmd_deliver"]


def _redis_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("not a redis://, rediss:// or unix:// URL")
    return value


class DeliverSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: Annotated[str | None, Opt(
        "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS",
        help="HOST:PORT[,HOST:PORT] of the brokers; security from KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* "
             "and KAFKA_SSL_CA_LOCATION")] = None
    messages_topic: Annotated[str, Opt("--messages-topic", "ESPRESSO_MESSAGES_TOPIC",
                                       help="topic of message records to send")] = "retargeting-messages"
    decisions_topic: Annotated[str, Opt("--decisions-topic", "ESPRESSO_DECISIONS_TOPIC",
                                        help="topic of decision records (sent, failed, skipped_duplicate)")
                               ] = "retargeting-decisions"
    dlq_topic: Annotated[str, Opt("--dlq-topic", "ESPRESSO_MESSAGES_DLQ_TOPIC",
                                  help="topic of messages that failed for good")] = "retargeting-messages-dlq"
    group: Annotated[str, Opt("--group", "ESPRESSO_DELIVER_GROUP",
                              help="Kafka consumer group; its committed offsets say what was delivered")
                     ] = "espresso-deliver"
    redis_url: Annotated[str | None, AfterValidator(_redis_url), Opt(
        "--redis-url", "REDIS_URL", help="Redis of the idempotency keys (required)",
        fix="give a URL such as redis://HOST:6379/0")] = None
    batch_size: Annotated[Count, Opt(
        "--batch-size", "ESPRESSO_DELIVER_BATCH_SIZE",
        help="most messages per batch (those already fetched: no waiting for more); offsets are committed "
             "per batch")] = 500
    max_in_flight: Annotated[Count, Opt("--max-in-flight", "ESPRESSO_DELIVER_MAX_IN_FLIGHT",
                                        help="sends running at once")] = 64
    metrics_port: Annotated[Port, Opt("--metrics-port", "ESPRESSO_METRICS_PORT",
                                      help="port of /metrics, /livez, /readyz; -1: off",
                                      fix="give a port 0-65535, or -1 for none")] = -1
    claim_lease: Annotated[Duration, Opt(
        "--claim-lease", "ESPRESSO_DELIVER_CLAIM_LEASE",
        help="how long a message claimed by a sender that died waits before another sends it; must exceed "
             "the longest send (timeouts x attempts + backoff)", fix="give a duration such as 90s or 5m")] = 300_000
    stop_at_end: Annotated[bool, Opt("--stop-at-end", switch=True, hidden=True)] = False


def add_deliver_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, DeliverSettings)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None):
    from connectors.kafka_config import KafkaConfig
    from flows.deliver import DeliverConfig

    env = os.environ if environ is None else environ
    s = load(DeliverSettings, args, env)
    if not s.redis_url:
        raise ConfigError("no Redis for the idempotency keys: pass --redis-url redis://HOST:PORT/DB or set REDIS_URL")
    if not s.bootstrap_servers:
        raise ConfigError("no Kafka brokers: pass --bootstrap-servers HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS")
    return DeliverConfig(
        kafka=KafkaConfig.from_env(s.bootstrap_servers, env, client_id="espresso-deliver"),
        claim_lease_s=s.claim_lease / 1000, redis_url=s.redis_url, messages_topic=s.messages_topic,
        decisions_topic=s.decisions_topic, dlq_topic=s.dlq_topic, group_id=s.group, batch_size=s.batch_size,
        max_in_flight=s.max_in_flight, stop_at_end=s.stop_at_end)


#: a channel setting as its config names it -> the variable it comes from, for messages
_CHANNEL_VARS = {
    "webhook": {"url": "ESPRESSO_WEBHOOK_URL", "timeout_s": "ESPRESSO_WEBHOOK_TIMEOUT",
                "max_attempts": "ESPRESSO_WEBHOOK_MAX_ATTEMPTS", "batch_size": "ESPRESSO_WEBHOOK_BATCH"},
    "smtp": {"host": "ESPRESSO_SMTP_HOST", "port": "ESPRESSO_SMTP_PORT", "from_addr": "ESPRESSO_SMTP_FROM"},
}


#: numeric channel variables: (variable, type, what to give)
_CHANNEL_NUMBERS = {
    "webhook": (("ESPRESSO_WEBHOOK_TIMEOUT", float, "seconds, such as 5 or 2.5"),
                ("ESPRESSO_WEBHOOK_MAX_ATTEMPTS", int, "a whole number such as 4"),
                ("ESPRESSO_WEBHOOK_BATCH", int, "a whole number of messages per request such as 100")),
    "smtp": (("ESPRESSO_SMTP_PORT", int, "a port such as 587"),),
}


def _channel_config(kind: str, make: Any, env: Mapping[str, str]) -> Any:
    """`make()`, with a setting's error naming its variable (`ESPRESSO_SMTP_FROM`, not "from_addr")."""
    for var, kind_of, example in _CHANNEL_NUMBERS[kind]:
        value = env.get(var, "")
        try:
            if value:
                kind_of(value)
        except ValueError:
            raise ConfigError(f"{kind} channel: {var}={value!r}: not a number; give {example}") from None
    try:
        return make()
    except ConfigError as exc:
        text = str(exc).removeprefix(f"{kind}: ")
        for field, var in _CHANNEL_VARS[kind].items():
            text = text.replace(f'"{field}"', var)
        raise ConfigError(f"{kind} channel: {text}") from None


def build_channels(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Channels by message `channel`, from the environment (secrets are read now)."""
    from connectors.smtp import SmtpChannel, SmtpConfig
    from connectors.webhook import WebhookChannel, WebhookConfig

    env = os.environ if environ is None else environ
    channels: dict[str, Any] = {}
    if env.get("ESPRESSO_WEBHOOK_URL"):
        webhook = WebhookChannel(_channel_config("webhook", lambda: WebhookConfig.from_env(env), env), environ=env)
        channels.update(sms=webhook, push=webhook, email=webhook)
    if env.get("ESPRESSO_SMTP_HOST"):
        channels["email"] = SmtpChannel(_channel_config("smtp", lambda: SmtpConfig.from_env(env), env), environ=env)
    if not channels:
        raise ConfigError(
            "no delivery channel configured: set ESPRESSO_WEBHOOK_URL (webhook for sms, push and email) "
            "and/or ESPRESSO_SMTP_HOST with ESPRESSO_SMTP_FROM (SMTP for email); see docs/delivery.md")
    return channels


def cmd_deliver(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from flows.deliver import deliver
    from metrics.health import DELIVER_HEALTH
    from metrics.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings = load(DeliverSettings, args)
    config = config_from_args(args)
    channels = build_channels()
    if settings.metrics_port >= 0:
        try:
            serve(settings.metrics_port, ready=DELIVER_HEALTH.ready, live=DELIVER_HEALTH.live)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {settings.metrics_port} (ESPRESSO_METRICS_PORT): cannot listen: "
                              f"{exc.strerror}; pick another port or -1 to disable") from None
    started = time.monotonic()
    try:
        stats = deliver(config, channels)
    except KafkaException as exc:  # one line naming what to check, not the client's exception
        err = exc.args[0] if exc.args else exc
        raise RuntimeFailure(f"Kafka at {config.kafka.bootstrap_servers}: {getattr(err, 'str', lambda: err)()}; check "
                             "--bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS and the KAFKA_SECURITY_* settings") from exc
    print(f"espresso deliver: {stats.consumed} messages consumed in {time.monotonic() - started:.1f}s "
          f"({stats.invalid} invalid -> {config.dlq_topic})", file=sys.stderr)
    return 0
