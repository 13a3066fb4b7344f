"""Servers for the connector tests: a misbehaving webhook provider and an SMTP server.

Both run on loopback for the whole session; each test gets them reset. Redis comes from the
shared fixtures `redis_server` / `redis_url` (tests/conftest.py).
"""

from __future__ import annotations

import uuid

import pytest

from tests.connectors.http_server import WebhookServer
from tests.connectors.smtp_server import SmtpServer


@pytest.fixture(scope="session")
def webhook_server():
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture
def webhook(webhook_server):
    """The session's webhook server with counters cleared and a 200-to-all behaviour."""
    webhook_server.reset()
    yield webhook_server
    webhook_server.reset()


@pytest.fixture(scope="session")
def smtp_session(tmp_path_factory):
    server = SmtpServer(tmp_path_factory.mktemp("smtp")).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_session):
    smtp_session.reset()
    return smtp_session


@pytest.fixture
def key_prefix():
    """A fresh Redis key prefix, so tests sharing one Redis never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:8]}:"
