"""Sender end to end: real webhook/SMTP servers on loopback and a real Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from connectors.delivery import DeliveryConfigError, RetryPolicy
from connectors.idempotency import IdempotencyConfig, RedisIdempotency
from connectors.sender import Sender, SenderClosed, SenderConfig
from connectors.smtp import SmtpChannel, SmtpConfig
from connectors.webhook import WebhookChannel, WebhookConfig
from tests.connectors.http_server import OK, Reply
from tests.connectors.smtp_server import PASSWORD, USER

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.05)
DECISION_FIELDS = {"schema", "message_id", "campaign_id", "channel", "contact_id", "outcome", "reason", "at"}


def message(n: int, channel: str = "sms", **extra) -> dict:
    m = {"schema": 1, "message_id": f"{n:032x}", "campaign_id": "sms-espresso-followup", "channel": channel,
         "contact_id": f"c-{n}", "variant": "A", "segment_id": "sms-espresso", "change_id": f"{n:032x}",
         "due_at": "2026-11-20T09:15:00.123Z", "to": {"phone": "+33600000000", "email": f"p{n}@example.com"},
         "subject": "Hi", "body": "Your cart is waiting", "data": {}}
    m.update(extra)
    return m


class Run:
    """A sender wired to the webhook server, collecting decisions and dead letters."""

    def __init__(self, webhook, redis_url: str, prefix: str, *, config: SenderConfig | None = None,
                 lease_s: float = 300.0, timeout_s: float = 5.0, retry: RetryPolicy = FAST, **channels) -> None:
        self.decisions: list[dict] = []
        self.dead: list[dict] = []
        self.store = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=prefix, lease_s=lease_s,
                                                        socket_timeout_s=1.0))
        if not channels:
            channels = {"sms": WebhookChannel(WebhookConfig(url=webhook.url, timeout_s=timeout_s, retry=retry))}
        self.sender = Sender(config or SenderConfig(max_in_flight=16, max_queued=64, held_poll_s=0.1),
                             self.store, channels, on_result=self.decisions.append, dead_letter=self.dead.append)

    def __enter__(self) -> Run:
        self.sender.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sender.close(timeout=60)

    def outcomes(self) -> Counter:
        return Counter(d["outcome"] for d in self.decisions)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def settled(read, quiet: float = 0.5, timeout: float = 30.0):
    """The value of read() once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("value never settled")
        time.sleep(0.02)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def test_every_message_sent_once_with_a_decision(webhook, redis_url, key_prefix):
    """200 messages: 200 `sent` decision records with the contract's fields, each accepted once."""
    msgs = [message(i) for i in range(200)]
    with Run(webhook, redis_url, key_prefix) as run:
        for m in msgs:
            run.sender.submit(m)
        assert run.sender.flush(60)
    assert run.outcomes() == {"sent": 200}
    assert all(DECISION_FIELDS <= d.keys() and d["latency_ms"] >= 0 for d in run.decisions)
    assert {d["message_id"] for d in run.decisions} == {m["message_id"] for m in msgs}
    assert webhook.delivered() == Counter({m["message_id"]: 1 for m in msgs})


def test_in_flight_is_bounded(webhook, redis_url, key_prefix):
    """With max_in_flight=4 and slow answers, the server never sees more than 4 requests at once."""
    webhook.reset(lambda n, m: Reply(delay_s=0.1))
    config = SenderConfig(max_in_flight=4, max_queued=32, held_poll_s=0.1)
    with Run(webhook, redis_url, key_prefix, config=config) as run:
        for i in range(40):
            run.sender.submit(message(i))
        assert run.sender.flush(120)
    assert webhook.requests == 40
    assert 1 < webhook.peak <= 4


def test_submit_blocks_when_queue_is_full(webhook, redis_url, key_prefix):
    """Back-pressure: with max_queued unfinished messages, submit waits (TimeoutError after its
    timeout), and accepts again once messages finish."""
    gate = threading.Event()
    webhook.reset(lambda n, m: Reply(delay_s=0.0 if gate.is_set() else 2.0))
    config = SenderConfig(max_in_flight=2, max_queued=4, held_poll_s=0.1)
    with Run(webhook, redis_url, key_prefix, config=config, timeout_s=30) as run:
        for i in range(4):
            run.sender.submit(message(i))
        with pytest.raises(TimeoutError):
            run.sender.submit(message(4), timeout=0.3)
        gate.set()
        run.sender.submit(message(5), timeout=60)
        assert run.sender.flush(60)
    assert run.outcomes() == {"sent": 5}


def test_permanent_failure_goes_to_dead_letter(webhook, redis_url, key_prefix):
    """A 400 is final: a dead-letter record with reason and message, a `failed` decision; the
    claim is released so a later replay of the message is sent."""
    webhook.reset(lambda n, m: Reply(400) if m["contact_id"] == "c-1" else OK)
    with Run(webhook, redis_url, key_prefix) as run:
        run.sender.submit(message(0))
        run.sender.submit(message(1))
        assert run.sender.flush(60)
        [dead] = run.dead
        assert dead["reason"] == "http_400" and dead["attempts"] == 1 and dead["channel"] == "webhook"
        assert dead["message"] == message(1) and dead["schema"] == 1 and dead["at"].endswith("Z")
        failed = [d for d in run.decisions if d["outcome"] == "failed"]
        assert [(d["contact_id"], d["reason"]) for d in failed] == [("c-1", "http_400")]
        webhook.behaviour = lambda n, m: OK
        run.sender.submit(message(1))  # replay from the dead-letter topic
        assert run.sender.flush(60)
    assert webhook.delivered() == Counter({message(0)["message_id"]: 1, message(1)["message_id"]: 1})


def test_retries_exhausted_goes_to_dead_letter(webhook, redis_url, key_prefix):
    """503 on every attempt: retried max_attempts times, then dead-lettered with `http_503`."""
    webhook.reset(lambda n, m: Reply(503))
    with Run(webhook, redis_url, key_prefix) as run:
        run.sender.submit(message(7))
        assert run.sender.flush(60)
    assert webhook.requests == 3
    assert [(d["reason"], d["attempts"]) for d in run.dead] == [("http_503", 3)]
    assert run.outcomes() == {"failed": 1}


def test_retries_then_success_is_one_sent_decision(webhook, redis_url, key_prefix):
    """Two 500s then 200: one `sent` decision with attempts=3, nothing dead-lettered."""
    webhook.reset(lambda n, m: Reply(500) if n <= 2 else OK)
    with Run(webhook, redis_url, key_prefix) as run:
        run.sender.submit(message(3))
        assert run.sender.flush(60)
    assert [(d["outcome"], d["attempts"]) for d in run.decisions] == [("sent", 3)]
    assert run.dead == []


def test_same_message_submitted_twice_is_delivered_once(webhook, redis_url, key_prefix):
    """The same message_id submitted 3 times (even while the first is in flight): one delivery,
    one `sent` and two `skipped_duplicate` decisions."""
    webhook.reset(lambda n, m: Reply(delay_s=0.3))
    with Run(webhook, redis_url, key_prefix) as run:
        for _ in range(3):
            run.sender.submit(message(11))
        assert run.sender.flush(60)
        run.sender.submit(message(11))
        assert run.sender.flush(60)
    assert run.outcomes() == {"sent": 1, "skipped_duplicate": 3}
    assert webhook.delivered() == Counter({message(11)["message_id"]: 1})


def test_two_senders_sharing_redis_deliver_each_message_once(webhook, redis_url, key_prefix):
    """Two workers given the same 150 messages at the same time: each is delivered exactly once;
    150 `sent` and 150 `skipped_duplicate` decisions between them."""
    msgs = [message(i) for i in range(150)]
    with Run(webhook, redis_url, key_prefix) as a, Run(webhook, redis_url, key_prefix) as b:
        threads = [threading.Thread(target=lambda r=r: [r.sender.submit(m) for m in msgs]) for r in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert a.sender.flush(60) and b.sender.flush(60)
    assert a.outcomes() + b.outcomes() == {"sent": 150, "skipped_duplicate": 150}
    assert webhook.delivered() == Counter({m["message_id"]: 1 for m in msgs})


def test_redis_down_mid_stream_pauses_then_resumes_exactly_once(webhook, redis_server, redis_url, key_prefix):
    """Redis stops mid-stream, with sends in flight: their results wait to be recorded, no new
    request reaches the server, submit blocks (back-pressure); Redis comes back: every message
    is delivered exactly once and has a `sent` decision."""
    msgs = [message(i) for i in range(300)]
    config = SenderConfig(max_in_flight=8, max_queued=40, store_backoff_s=0.05, store_backoff_max_s=0.5)
    gate = threading.Event()
    with Run(webhook, redis_server.url, key_prefix, config=config, timeout_s=60) as run:
        for m in msgs[:100]:
            run.sender.submit(m)
        assert run.sender.flush(60)
        webhook.behaviour = lambda n, m: Reply(gate=gate)
        for m in msgs[100:108]:
            run.sender.submit(m)
        wait_for(lambda: webhook.active == 8, what="8 sends in flight")
        redis_server.stop()
        submitted = []

        def produce():
            for m in msgs[108:]:
                run.sender.submit(m, timeout=120)
                submitted.append(m)

        producer = threading.Thread(target=produce)
        try:
            producer.start()
            webhook.behaviour = lambda n, m: OK
            gate.set()
            wait_for(lambda: run.sender.stats().store_down, what="the sender to see Redis down")
            paused = settled(lambda: (webhook.requests, len(submitted)))
            time.sleep(0.5)
            assert (webhook.requests, len(submitted)) == paused, "work went on while Redis was down"
            assert paused[0] == 108 and paused[1] < 192 and producer.is_alive()
            assert run.sender.stats().sent == 100  # the 8 in flight are not recorded yet
        finally:
            gate.set()
            redis_server.start()
        producer.join(120)
        assert run.sender.flush(120)
        stats = run.sender.stats()
    assert stats.store_outages >= 1 and not stats.store_down
    assert run.outcomes() == {"sent": 300}
    assert webhook.delivered() == Counter({m["message_id"]: 1 for m in msgs})


def test_stale_claim_of_a_dead_worker_is_taken_over(webhook, redis_url, key_prefix):
    """A worker that claimed a message and died leaves a `sending` key: after the lease, another
    sender claims it again and delivers it once."""
    dead_worker = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=key_prefix, lease_s=2.0))
    asyncio.run(_claim_and_close(dead_worker, message(21)["message_id"]))
    with Run(webhook, redis_url, key_prefix, lease_s=2.0, timeout_s=0.5,
             retry=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.05)) as run:
        run.sender.submit(message(21))
        assert run.sender.flush(60)
    assert run.outcomes() == {"sent": 1}
    assert webhook.delivered() == Counter({message(21)["message_id"]: 1})


def test_message_held_elsewhere_then_sent_there_is_skipped(webhook, redis_url, key_prefix):
    """While another worker holds the claim, the message waits; when that worker marks it sent,
    this sender reports `skipped_duplicate` and sends nothing."""
    other = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=key_prefix))
    mid = message(22)["message_id"]
    claim = asyncio.run(_claim_and_close(other, mid))
    with Run(webhook, redis_url, key_prefix) as run:
        run.sender.submit(message(22))
        time.sleep(0.3)
        assert run.decisions == []
        asyncio.run(_mark_and_close(other, mid, claim))
        assert run.sender.flush(60)
    assert run.outcomes() == {"skipped_duplicate": 1}
    assert webhook.requests == 0


async def _claim_and_close(store: RedisIdempotency, message_id: str) -> str:
    [claim] = await store.claim_many([(message_id, "1")])
    await store.close()
    return claim.value


async def _mark_and_close(store: RedisIdempotency, message_id: str, claim: str) -> None:
    await store.mark_sent_many([(message_id, claim)])
    await store.close()


def test_routing_by_channel_email_and_unknown(webhook, smtp_server, redis_url, key_prefix):
    """`email` goes to SMTP, `sms` to the webhook; a channel with no connector is a failed
    decision `no_channel` and a dead letter; a record without message_id is `bad_message`."""
    smtp = SmtpChannel(SmtpConfig(host="127.0.0.1", port=smtp_server.port, from_addr="shop@espresso.test",
                                  username_env="U", password_env="P", ca_file=str(smtp_server.ca_file)),
                       environ={"U": USER, "P": PASSWORD})
    hook = WebhookChannel(WebhookConfig(url=webhook.url, retry=FAST))
    with Run(webhook, redis_url, key_prefix, email=smtp, sms=hook) as run:
        run.sender.submit(message(31, "email"))
        run.sender.submit(message(32, "sms"))
        run.sender.submit(message(33, "fax"))
        run.sender.submit({"channel": "sms", "contact_id": "c-34"})
        assert run.sender.flush(60)
    by_contact = {d["contact_id"]: (d["outcome"], d["reason"]) for d in run.decisions}
    assert by_contact == {"c-31": ("sent", ""), "c-32": ("sent", ""), "c-33": ("failed", "no_channel"),
                          "c-34": ("failed", "bad_message")}
    assert [m["To"] for m in smtp_server.messages] == ["p31@example.com"]
    assert webhook.delivered() == Counter({message(32)["message_id"]: 1})
    assert sorted(d["reason"] for d in run.dead) == ["bad_message", "no_channel"]


def test_close_flushes_and_refuses_more(webhook, redis_url, key_prefix):
    """close() waits for every submitted message's decision; submit after close raises."""
    webhook.reset(lambda n, m: Reply(delay_s=0.05))
    run = Run(webhook, redis_url, key_prefix)
    run.sender.start()
    for i in range(30):
        run.sender.submit(message(i))
    assert run.sender.close(timeout=60)
    assert run.outcomes() == {"sent": 30}
    with pytest.raises(SenderClosed):
        run.sender.submit(message(99))


def test_lease_shorter_than_a_send_is_refused(webhook, redis_url, key_prefix):
    """A lease that a send with its retries could outlast is a configuration error."""
    store = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=key_prefix, lease_s=5))
    channel = WebhookChannel(WebhookConfig(url=webhook.url, timeout_s=10))
    with pytest.raises(DeliveryConfigError, match='"lease_s" must exceed the longest send'):
        Sender(SenderConfig(), store, {"sms": channel})
    with pytest.raises(DeliveryConfigError, match='"max_queued" must be >= "max_in_flight"'):
        SenderConfig(max_in_flight=10, max_queued=5)


def test_redis_unreachable_at_start_pauses_not_raises(webhook, key_prefix):
    """No Redis at all: start() succeeds, messages wait (no request goes out), close() reports
    them unfinished after its timeout."""
    from tests.servers import free_port
    run = Run(webhook, f"redis://127.0.0.1:{free_port()}/0", key_prefix)
    run.sender.start()
    run.sender.submit(message(41))
    wait_for(lambda: run.sender.stats().store_down, what="store_down")
    assert not run.sender.close(timeout=0.5)
    assert webhook.requests == 0 and run.decisions == []
