"""`espresso deliver` and `espresso members` as subprocesses against real Kafka, Redis and a
webhook provider on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from tests.connectors.http_server import WebhookServer
from tests.integration.live import ROOT, now_ms, produce, read_all
from tests.servers import FAST_GROUP_CONFIG

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def provider():
    server = WebhookServer().start()
    yield server
    server.stop()


def _espresso(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "ESPRESSO_WEBHOOK_URL", "ESPRESSO_SMTP_HOST"):
        if var not in (env or {}):
            full.pop(var, None)
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=ROOT, env=full, capture_output=True, check=False,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _message(n: int, contact: str) -> dict:
    return {"schema": 1, "message_id": f"{n:032x}", "campaign_id": "sms-espresso", "channel": "sms",
            "contact_id": contact, "variant": "A", "segment_id": "email-espresso", "change_id": f"ch{n}",
            "due_at": "2026-11-20T09:15:00.123Z", "to": {"phone": f"+3361234567{n}"}, "body": "Coffee?",
            "data": {}}


def test_deliver_sends_each_message_once_and_records_decisions(kafka_bootstrap, kafka_topic_factory, redis_url,
                                                                provider):
    """Three messages and a repeat of the first one's message_id: the webhook provider receives
    each distinct message exactly once (by Idempotency-Key), the decisions topic holds one
    decision per consumed record (three `sent`, one `skipped_duplicate`), nothing is dead-lettered,
    and a second run with the same consumer group consumes nothing (offsets were committed)."""
    provider.reset()
    messages_topic = kafka_topic_factory(prefix="deliver-messages")
    decisions_topic = kafka_topic_factory(prefix="deliver-decisions")
    dlq_topic = kafka_topic_factory(prefix="deliver-dlq")
    messages = [_message(1, "c-1"), _message(2, "c-2"), _message(3, "c-3")]
    produce(kafka_bootstrap, messages_topic, [*messages, dict(messages[0], body="again")])

    group = f"deliver-test-{now_ms()}"
    env = {"ESPRESSO_WEBHOOK_URL": provider.url, "KAFKA_CONSUMER_SETTINGS":
           ",".join(f"{k}={v}" for k, v in FAST_GROUP_CONFIG.items())}
    argv = ["deliver", "--stop-at-end", "--bootstrap-servers", kafka_bootstrap, "--redis-url", redis_url,
            "--messages-topic", messages_topic, "--decisions-topic", decisions_topic, "--dlq-topic", dlq_topic,
            "--group", group]
    res = _espresso(*argv, env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    assert dict(provider.accepted) == {m["message_id"]: 1 for m in messages}
    assert provider.requests == 3
    decisions = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, decisions_topic)]
    outcomes = sorted((d["message_id"], d["outcome"]) for d in decisions)
    assert outcomes == sorted([(m["message_id"], "sent") for m in messages]
                              + [(messages[0]["message_id"], "skipped_duplicate")])
    assert all(d["channel"] == "sms" and d["campaign_id"] == "sms-espresso" for d in decisions)
    assert read_all(kafka_bootstrap, dlq_topic) == []

    again = _espresso(*argv, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 messages consumed" in again.stderr
    assert provider.requests == 3


def test_deliver_without_channel_is_one_clear_line(redis_url):
    """No ESPRESSO_WEBHOOK_URL nor ESPRESSO_SMTP_HOST: exit code 2 and one line naming both."""
    res = _espresso("deliver", "--bootstrap-servers", "127.0.0.1:9", "--redis-url", redis_url)
    assert res.returncode == 2
    assert "ESPRESSO_WEBHOOK_URL" in res.stderr and "ESPRESSO_SMTP_HOST" in res.stderr
    assert "Traceback" not in res.stderr


def test_members_from_applied_changes_topic(kafka_bootstrap, kafka_topic_factory, redis_url):
    """Changes enter a, enter b, exit a on the changes topic: after --apply-changes-topic the
    segment lists `b`, --count prints 1, --contact b exits 0 and --contact a exits 1;
    applying the topic again changes nothing."""
    topic = kafka_topic_factory(prefix="members-changes")
    seg = "email-espresso"

    def change(contact: str, direction: str, seq: int) -> dict:
        return {"schema": 1, "change_id": f"{contact}{seq}", "contact_id": contact, "segment_id": seg,
                "direction": direction, "at": "2026-11-20T09:15:00.123Z", "seq": seq,
                "cause": {"kind": "event", "event_id": f"e-{contact}{seq}", "type": "email_open"},
                "expires_at": None, "late": False}

    produce(kafka_bootstrap, topic, [change("a", "enter", 1), change("b", "enter", 1), change("a", "exit", 2)])
    common = ["--redis-url", redis_url, "--bootstrap-servers", kafka_bootstrap]

    res = _espresso("members", seg, "--apply-changes-topic", topic, *common)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["b"]
    assert "3 changes applied" in res.stderr

    res = _espresso("members", seg, "--count", *common)
    assert (res.returncode, res.stdout.strip()) == (0, "1")
    assert _espresso("members", seg, "--contact", "b", *common).returncode == 0
    assert _espresso("members", seg, "--contact", "a", *common).returncode == 1

    res = _espresso("members", seg, "--count", "--apply-changes-topic", topic, *common)
    assert (res.returncode, res.stdout.strip()) == (0, "1"), res.stderr
    assert "0 changes applied, 3 already applied" in res.stderr
