"""The webhook's batch option against the real loopback provider: per-message outcomes of a
batch answer become per-message results and decisions, still exactly once with Redis."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from connectors.breaker import OPEN, BreakerConfig
from connectors.delivery import DeliveryConfigError, RetryPolicy
from connectors.sender import SenderConfig
from connectors.webhook import WebhookChannel, WebhookConfig
from tests.connectors.http_server import Reply
from tests.connectors.test_sender import Run, message
from tests.connectors.test_webhook import send

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.05)


def batch_channel(server, batch: int = 10, **kw) -> WebhookChannel:
    kw.setdefault("retry", FAST)
    return WebhookChannel(WebhookConfig(url=server.url, batch_size=batch, timeout_s=2.0, **kw), rng=random.Random(1))


def send_all(channel: WebhookChannel, messages: list[dict]):
    return send(channel, *messages)


def test_messages_sent_together_share_requests(webhook):
    """25 messages sent at once with batch 10: 3 requests of at most 10, each message accepted once."""
    msgs = [message(i) for i in range(25)]
    results = send_all(batch_channel(webhook, 10), msgs)
    assert all(r.ok and r.attempts == 1 for r in results)
    assert webhook.requests == 3
    assert sorted(len(b["messages"]) for b in webhook.bodies) == [5, 10, 10]
    assert webhook.delivered() == Counter({m["message_id"]: 1 for m in msgs})
    assert webhook.bodies[0]["messages"][0] == msgs[0]  # the records themselves, unchanged


def test_per_message_outcomes_map_to_results(webhook):
    """In one batch answer: a 400 fails that message alone (not retried), a 503 and a message
    left out are retried in the next batch, the rest succeed at once."""
    ids = {n: message(n)["message_id"] for n in range(6)}
    refused, busy, forgotten = ids[1], ids[2], ids[3]

    def item(n: int, m: dict) -> int | None:
        if m["message_id"] == refused:
            return 400
        if n == 1 and m["message_id"] == busy:
            return 503
        if n == 1 and m["message_id"] == forgotten:
            return None
        return 200
    webhook.item_status = item
    results = dict(zip(ids.values(), send_all(batch_channel(webhook, 10), [message(n) for n in range(6)])))
    assert (results[refused].ok, results[refused].reason, results[refused].attempts) == (False, "http_400", 1)
    assert results[busy].ok and results[busy].attempts == 2
    assert results[forgotten].ok and results[forgotten].attempts == 2
    assert all(results[ids[n]].ok and results[ids[n]].attempts == 1 for n in (0, 4, 5))
    sizes = [len(b["messages"]) for b in webhook.bodies]  # the two retries wait their own jittered backoff
    assert sizes[0] == 6 and sum(sizes[1:]) == 2
    assert webhook.delivered() == Counter({ids[n]: 1 for n in (0, 2, 3, 4, 5)})


def test_a_failing_provider_fails_every_message_after_the_attempts(webhook):
    """A whole-batch 500 applies to every message: retried up to max_attempts, then `http_500`.
    The breaker counts requests; once open, a batch fails as `circuit_open` without a request."""
    webhook.reset(lambda n, m: Reply(500))
    ch = batch_channel(webhook, 10, breaker=BreakerConfig(failure_threshold=100))
    results = send_all(ch, [message(n) for n in range(4)])
    assert [(r.ok, r.reason, r.attempts) for r in results] == [(False, "http_500", 3)] * 4
    assert webhook.delivered() == Counter()
    webhook.reset(lambda n, m: Reply(500))
    ch = batch_channel(webhook, 10, retry=RetryPolicy(max_attempts=1), breaker=BreakerConfig(1, cooldown_s=30))
    assert [r.reason for r in send_all(ch, [message(n) for n in range(3)])] == ["http_500"] * 3
    assert ch.breaker.state == OPEN and webhook.requests == 1
    [late] = send_all(ch, [message(9)])
    assert late.reason == "circuit_open" and webhook.requests == 1


def test_reading_a_batch_answer():
    """No `results` list (a plain 202, or not JSON): the 2xx took the whole batch; a list maps
    message ids to statuses, skipping entries without both."""
    from connectors.webhook import _batch_statuses
    assert _batch_statuses(b"{}") is None and _batch_statuses(b"not json") is None and _batch_statuses(b"") is None
    assert _batch_statuses(b'{"results": [{"message_id": "a", "status": 200}, {"status": 500}, 3]}') == {"a": 200}


def test_batch_size_is_checked():
    with pytest.raises(DeliveryConfigError, match='"batch_size" must be 1-10000'):
        WebhookConfig(url="http://127.0.0.1:1/x", batch_size=0)
    assert WebhookConfig.from_env({"ESPRESSO_WEBHOOK_URL": "http://h/x", "ESPRESSO_WEBHOOK_BATCH": "50"}).batch_size == 50


def test_sender_with_batches_is_exactly_once(webhook, redis_url, key_prefix):
    """Through a Sender with Redis: 120 messages each submitted twice, some refused by the
    provider in the batch answer: every accepted message reaches the provider once and is
    `sent` once, the refused ones are `failed` with a dead letter and their keys released."""
    refused = {message(n)["message_id"] for n in range(0, 120, 10)}
    webhook.item_status = lambda n, m: 422 if m["message_id"] in refused else 200
    ch = batch_channel(webhook, 25)
    with Run(webhook, redis_url, key_prefix, sms=ch,
             config=SenderConfig(max_in_flight=100, max_queued=400, held_poll_s=0.05)) as run:
        for n in range(120):
            run.sender.submit(message(n))
            run.sender.submit(message(n))
        assert run.sender.flush(60)
    sent = Counter(d["message_id"] for d in run.decisions if d["outcome"] == "sent")
    failed = [d for d in run.decisions if d["outcome"] == "failed"]
    assert set(sent) == {message(n)["message_id"] for n in range(120)} - refused
    assert all(v == 1 for v in sent.values())
    assert webhook.delivered() == Counter({k: 1 for k in sent})
    assert max(len(b["messages"]) for b in webhook.bodies) > 1  # batches did form
    # a refused message fails once per submission (its key is released after each failure)
    assert Counter(d["message_id"] for d in failed) == Counter({k: 2 for k in refused})
    assert {d["reason"] for d in failed} == {"http_422"} and len(run.dead) == len(failed)
    assert len(run.decisions) == 240
