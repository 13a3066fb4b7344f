"""Webhook channel against a real HTTP server on loopback that fails on purpose."""

from __future__ import annotations

import asyncio
import random

import pytest

from connectors.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig
from connectors.delivery import DeliveryConfigError, RetryPolicy
from connectors.webhook import WebhookChannel, WebhookConfig
from tests.connectors.http_server import OK, Reply

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=4, base_s=0.01, max_s=0.05)


def message(n: int = 1) -> dict:
    return {"schema": 1, "message_id": f"{n:032x}", "campaign_id": "sms-espresso-followup", "channel": "sms",
            "contact_id": f"c-{n}", "to": {"phone": "+33600000000"}, "body": "hello", "data": {}}


def send(channel: WebhookChannel, *messages: dict):
    async def run():
        try:
            return await asyncio.gather(*(channel.send(m) for m in messages))
        finally:
            await channel.close()
    return asyncio.run(run())


def channel_for(server, **kw) -> WebhookChannel:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout_s", 2.0)
    return WebhookChannel(WebhookConfig(url=server.url, **kw), rng=random.Random(1))


def test_retries_5xx_then_succeeds(webhook):
    """Two 500s then a 200: the send succeeds on attempt 3 and the provider accepted it once."""
    webhook.reset(lambda n, m: Reply(500) if n <= 2 else OK)
    [result] = send(channel_for(webhook), message())
    assert result.ok and result.attempts == 3
    assert webhook.requests == 3 and webhook.delivered() == {message()["message_id"]: 1}


def test_gives_up_after_max_attempts_with_last_reason(webhook):
    """Always 503: exactly max_attempts requests, failure reason `http_503`."""
    webhook.reset(lambda n, m: Reply(503))
    [result] = send(channel_for(webhook), message())
    assert not result.ok and result.reason == "http_503" and result.attempts == 4
    assert webhook.requests == 4


def test_4xx_is_not_retried(webhook):
    """A 400 fails at once (sending again would not help) with reason `http_400`."""
    webhook.reset(lambda n, m: Reply(400))
    [result] = send(channel_for(webhook), message())
    assert (result.ok, result.reason, result.attempts, webhook.requests) == (False, "http_400", 1, 1)


def test_429_is_retried_honouring_retry_after(webhook):
    """A 429 with Retry-After is retried (waiting at most the policy's max) and then succeeds."""
    webhook.reset(lambda n, m: Reply(429, headers={"Retry-After": "0"}) if n == 1 else OK)
    [result] = send(channel_for(webhook), message())
    assert result.ok and result.attempts == 2


def test_timeout_is_retried(webhook):
    """A response slower than the timeout counts as a failed attempt and is retried."""
    webhook.reset(lambda n, m: Reply(delay_s=5.0) if n == 1 else OK)
    [result] = send(channel_for(webhook, timeout_s=1.0), message())
    assert result.ok and result.attempts >= 2
    assert webhook.delivered() == {message()["message_id"]: 1}


def test_connection_drop_is_retried(webhook):
    """A connection closed without a response is a `connection_error`, retried."""
    webhook.reset(lambda n, m: Reply(drop=True) if n <= 2 else OK)
    [result] = send(channel_for(webhook), message())
    assert result.ok and result.attempts == 3


def test_connection_refused_fails_as_data():
    """Nothing listening: after the attempts, a `connection_error` result, not an exception."""
    from tests.servers import free_port
    ch = WebhookChannel(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/x", retry=FAST))
    [result] = send(ch, message())
    assert not result.ok and result.reason == "connection_error" and result.attempts == 4


def test_headers_idempotency_key_and_auth_from_env(webhook):
    """Each POST carries Idempotency-Key = message_id and the auth value from the named env var,
    which appears in no repr."""
    env = {"TEST_WEBHOOK_TOKEN": "Bearer t0k3n"}
    ch = WebhookChannel(WebhookConfig(url=webhook.url, auth_env="TEST_WEBHOOK_TOKEN", retry=FAST), environ=env)
    assert "t0k3n" not in repr(ch) and "t0k3n" not in repr(ch.config)
    [result] = send(ch, message(5))
    assert result.ok
    headers = webhook.headers[0]
    assert headers["Idempotency-Key"] == message(5)["message_id"]
    assert headers["Authorization"] == "Bearer t0k3n"
    assert webhook.bodies[0] == message(5)


def test_missing_auth_env_is_a_config_error():
    """An auth variable that is not set fails at construction, naming the variable only."""
    with pytest.raises(DeliveryConfigError, match="NOPE_TOKEN is not set"):
        WebhookChannel(WebhookConfig(url="http://127.0.0.1:1/x", auth_env="NOPE_TOKEN"), environ={})
    with pytest.raises(DeliveryConfigError, match='"url" must be an http'):
        WebhookConfig(url="ftp://x")


def test_breaker_opens_then_half_opens_and_closes(webhook):
    """3 failing sends open the breaker: the next send fails fast with no request; after the
    cool-down one probe goes out and its success closes the breaker."""
    webhook.reset(lambda n, m: Reply(500))
    ch = channel_for(webhook, retry=RetryPolicy(max_attempts=1), breaker=BreakerConfig(3, cooldown_s=0.5))

    async def run():
        results = [await ch.send(message(i)) for i in range(3)]
        assert [r.reason for r in results] == ["http_500"] * 3
        assert ch.breaker.state == OPEN
        fast = await ch.send(message(4))
        assert fast.reason == "circuit_open" and fast.attempts == 0
        assert webhook.requests == 3
        await asyncio.sleep(0.6)
        assert ch.breaker.state == HALF_OPEN
        webhook.behaviour = lambda n, m: OK
        probe = await ch.send(message(5))
        assert probe.ok and ch.breaker.state == CLOSED
        await ch.close()
    asyncio.run(run())
    assert webhook.requests == 4


def test_half_open_failed_probe_reopens(webhook):
    """A failing half-open probe opens the breaker again: following sends fail fast."""
    webhook.reset(lambda n, m: Reply(502))
    ch = channel_for(webhook, retry=RetryPolicy(max_attempts=1), breaker=BreakerConfig(1, cooldown_s=2.0))

    async def run():
        await ch.send(message(1))
        await asyncio.sleep(2.1)
        probe = await ch.send(message(2))
        assert probe.reason == "http_502" and ch.breaker.state == OPEN
        assert (await ch.send(message(3))).reason == "circuit_open"
        await ch.close()
    asyncio.run(run())
    assert webhook.requests == 2


def test_config_from_env_names_the_secret_variable_only():
    """from_env reads ESPRESSO_WEBHOOK_*; the config keeps the auth variable's name, not its value."""
    env = {"ESPRESSO_WEBHOOK_URL": "https://provider.test/hook", "ESPRESSO_WEBHOOK_AUTH": "Bearer sekret",
           "ESPRESSO_WEBHOOK_TIMEOUT": "2.5", "ESPRESSO_WEBHOOK_MAX_ATTEMPTS": "6"}
    config = WebhookConfig.from_env(env)
    assert (config.url, config.auth_env, config.timeout_s, config.retry.max_attempts) == \
        ("https://provider.test/hook", "ESPRESSO_WEBHOOK_AUTH", 2.5, 6)
    assert "sekret" not in repr(config)
    with pytest.raises(DeliveryConfigError, match="ESPRESSO_WEBHOOK_URL is not set"):
        WebhookConfig.from_env({})
