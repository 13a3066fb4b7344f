"""Checking and creating the live flow's topics before the dataflow starts.

Topics are listed with a metadata request for *all* topics: asking for one topic by name
makes brokers with `auto.create.topics.enable` create it with default settings, which
would hide a typo in a topic name.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from .kafka_config import KafkaConfig, KafkaConfigError

__all__ = ["list_topics", "partitions_of", "create_topics", "ensure_topics", "TopicSpec"]

log = logging.getLogger(__name__)


class TopicSpec:
    """A topic the flow needs: its name, the flag naming it (for messages), whether it is read."""

    def __init__(self, name: str, flag: str, partitions: int | None = None) -> None:
        self.name, self.flag, self.partitions = name, flag, partitions

    def __repr__(self) -> str:
        return f"TopicSpec({self.name!r}, {self.flag!r}, {self.partitions!r})"


def _admin(cfg: KafkaConfig) -> AdminClient:
    return AdminClient(cfg.admin())


def list_topics(cfg: KafkaConfig, timeout: float = 10.0) -> dict[str, int]:
    """{topic: partition count} of every topic the brokers report (no auto-creation)."""
    try:
        md = _admin(cfg).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaConfigError(
            f"cannot reach Kafka at {cfg.bootstrap_servers} within {timeout:g}s ({exc.args[0].str()}): "
            "check --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS and the KAFKA_SECURITY_* settings") from None
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None and t.partitions}


def partitions_of(cfg: KafkaConfig, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of `topic`, sorted; raises a configuration error when it does not exist."""
    try:
        md = _admin(cfg).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaConfigError(f"cannot list topics on {cfg.bootstrap_servers}: {exc.args[0].str()}") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise KafkaConfigError(f"topic {topic!r} does not exist on {cfg.bootstrap_servers}")
    return sorted(t.partitions)


def create_topics(cfg: KafkaConfig, topics: dict[str, int], replication: int = -1,
                  timeout: float = 30.0) -> list[str]:
    """Create the missing ones of `topics` ({name: partitions}); returns those created.

    `replication=-1` lets the broker use its default replication factor.
    """
    existing = list_topics(cfg)
    missing = [NewTopic(name, n, replication) for name, n in topics.items() if name not in existing]
    if not missing:
        return []
    admin = _admin(cfg)  # keep a reference: the futures die with their client
    futures = admin.create_topics(missing, request_timeout=timeout)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if err.name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaConfigError(f"cannot create topic {name!r} on {cfg.bootstrap_servers}: {err.str()}") from None
    # Metadata propagates asynchronously: wait until every broker reports the new topics.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = list_topics(cfg)
        if all(name in have for name in topics):
            break
        time.sleep(0.1)
    if created:
        log.info("created topics %s on %s", ", ".join(created), cfg.bootstrap_servers)
    return created


def ensure_topics(cfg: KafkaConfig, specs: list[TopicSpec], create: bool, partitions: int,
                  env_hint: str = "") -> dict[str, int]:
    """Check that every topic exists (creating the missing ones when `create`).

    Returns {topic: partitions}. Errors name the flag and the fix.
    """
    if create:
        create_topics(cfg, {s.name: s.partitions or partitions for s in specs})
    have = list_topics(cfg)
    for s in specs:
        if s.name not in have:
            raise KafkaConfigError(
                f"topic {s.name!r} ({s.flag}) does not exist on {cfg.bootstrap_servers}; create it "
                f"or pass --create-topics (with --partitions N, default {partitions}){env_hint}")
    return {s.name: have[s.name] for s in specs}
