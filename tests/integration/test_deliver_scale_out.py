"""Two `espresso deliver` processes in one consumer group on one messages topic, against the
real broker, Redis and a webhook provider on loopback: the partitions are split between them
and every message reaches the provider exactly once across both."""

from __future__ import annotations

import re
import time
from collections import Counter

import orjson
import pytest

from tests.connectors.http_server import WebhookServer
from tests.integration.live import Deliver, now_ms, produce, read_all

pytestmark = pytest.mark.integration

PARTS = 4


@pytest.fixture(scope="module")
def provider():
    server = WebhookServer().start()
    yield server
    server.stop()


def _message(n: int) -> dict:
    return {"schema": 1, "message_id": f"scale-{n:08d}", "campaign_id": "email-espresso-resend", "channel": "email",
            "contact_id": f"c-{n}", "variant": "A", "segment_id": "email-espresso", "change_id": f"ch{n}",
            "due_at": "2026-11-20T09:15:00.123Z", "to": {"email": f"p{n}@example.com"}, "subject": "Hi",
            "body": "Coffee?", "data": {}}


def _assignment(d: Deliver) -> set[int]:
    """The partitions a process holds: its last `assigned [...]` log line (eager rebalances)."""
    found = re.findall(r"assigned \[([0-9, ]*)\]", d.log_path.read_text(errors="replace"))
    return {int(x) for x in found[-1].split(",") if x.strip()} if found else set()


def test_two_processes_share_the_topic_and_deliver_each_message_once(kafka_bootstrap, kafka_topic_factory,
                                                                     redis_url, provider, tmp_path):
    """1,500 messages on 4 partitions, 100 of them produced twice under another key (so the two
    copies may land on partitions of different processes): once the group has split the
    partitions 2 + 2, each process delivers its share (one posts batches, the other single
    messages, as the provider sees), the provider accepts every message exactly once, and the
    decisions are one `sent` per message and one `skipped_duplicate` per copy."""
    provider.reset()
    topics = {"messages": kafka_topic_factory(PARTS, prefix="scale-messages"),
              "delivered": kafka_topic_factory(1, prefix="scale-delivered"),
              "delivery_dlq": kafka_topic_factory(1, prefix="scale-dlq")}
    group = f"scale-{now_ms()}"
    first = Deliver(tmp_path, kafka_bootstrap, redis_url, provider.url, topics, group, name="deliver-a",
                    env={"ESPRESSO_WEBHOOK_BATCH": "20"})
    second = Deliver(tmp_path, kafka_bootstrap, redis_url, provider.url, topics, group, name="deliver-b")
    try:
        deadline = time.monotonic() + 90
        while not (_assignment(first) and _assignment(second)
                   and _assignment(first) | _assignment(second) == set(range(PARTS))
                   and not _assignment(first) & _assignment(second)):
            assert first.proc.poll() is None and second.proc.poll() is None, first.tail() + second.tail()
            assert time.monotonic() < deadline, f"no 2+2 split:\n{first.tail()}\n{second.tail()}"
            time.sleep(0.2)
        messages = [_message(n) for n in range(1500)]
        copies = [dict(messages[n], contact_id=f"other-{n}") for n in range(0, 1500, 15)]
        produce(kafka_bootstrap, topics["messages"], [*messages, *copies])
        want = {m["message_id"] for m in messages}
        deadline = time.monotonic() + 120
        while set(provider.delivered()) != want:
            assert first.proc.poll() is None and second.proc.poll() is None, first.tail() + second.tail()
            assert time.monotonic() < deadline, f"{len(want - set(provider.delivered()))} never delivered"
            time.sleep(0.2)
        time.sleep(1.0)  # anything sent twice would show up now
        assert first.stop() == 0 and second.stop() == 0
    finally:
        first.kill()
        second.kill()
    assert provider.delivered() == Counter({mid: 1 for mid in want})
    batched = [b for b in provider.bodies if "messages" in b]
    single = [b for b in provider.bodies if "messages" not in b]
    assert batched and single, "both processes delivered"
    assert max(len(b["messages"]) for b in batched) > 1
    decisions = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["delivered"])]
    outcomes = Counter(d["outcome"] for d in decisions)
    assert outcomes == {"sent": 1500, "skipped_duplicate": len(copies)}, outcomes
    assert Counter(d["message_id"] for d in decisions if d["outcome"] == "sent") == Counter({m: 1 for m in want})
    assert read_all(kafka_bootstrap, topics["delivery_dlq"]) == []
