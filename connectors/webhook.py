"""HTTP webhook channel: JSON POST of the message record to a provider URL (aiohttp).

Each request carries `Idempotency-Key: <message_id>` so a provider that honours it drops a
repeated delivery, and the auth header whose value comes from the environment variable
named by `WebhookConfig.auth_env` (the value is never logged nor kept in the config).

Retries: on 5xx, 429, timeouts and connection errors, up to `retry.max_attempts` tries with
exponential backoff and full jitter (a `Retry-After` in seconds on 429/503 is honoured, up to
`retry.max_s`). Any other 4xx fails at once: sending it again would not help. A circuit
breaker counts 5xx, timeouts and connection errors; while it is open, sends fail at once
with reason `circuit_open`.

Reason codes: `http_<status>`, `timeout`, `connection_error`, `circuit_open`, `bad_message`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from connectors.breaker import BreakerConfig, CircuitBreaker
from connectors.delivery import DeliveryConfigError, RetryPolicy, SendResult, secret_from_env

__all__ = ["WebhookChannel", "WebhookConfig"]


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to POST.

    `auth_env` names the environment variable holding the value of header `auth_header`
    (e.g. `ESPRESSO_WEBHOOK_TOKEN` holding `Bearer abc...`); None sends no auth header.
    `timeout_s` bounds one request (connect + response); `max_connections` the pool.
    """

    url: str
    auth_env: str | None = None
    auth_header: str = "Authorization"
    timeout_s: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_connections: int = 100
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = "webhook"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DeliveryConfigError(f'"url" must be an http(s) URL: {self.url!r}')
        if self.timeout_s <= 0:
            raise DeliveryConfigError(f'"timeout_s" must be > 0: {self.timeout_s}')
        if self.max_connections < 1:
            raise DeliveryConfigError(f'"max_connections" must be >= 1: {self.max_connections}')


    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, name: str = "webhook") -> WebhookConfig:
        """From `ESPRESSO_WEBHOOK_URL` (required), `ESPRESSO_WEBHOOK_TIMEOUT` (seconds),
        `ESPRESSO_WEBHOOK_MAX_ATTEMPTS`; the auth header value is read from
        `ESPRESSO_WEBHOOK_AUTH` when that variable is set (header `ESPRESSO_WEBHOOK_AUTH_HEADER`,
        default `Authorization`)."""
        env = {} if environ is None else environ  # the caller (commands/) reads the environment
        url = env.get("ESPRESSO_WEBHOOK_URL", "")
        if not url:
            raise DeliveryConfigError("webhook: environment variable ESPRESSO_WEBHOOK_URL is not set")
        try:
            return cls(url=url, name=name,
                       auth_env="ESPRESSO_WEBHOOK_AUTH" if env.get("ESPRESSO_WEBHOOK_AUTH") else None,
                       auth_header=env.get("ESPRESSO_WEBHOOK_AUTH_HEADER", "Authorization"),
                       timeout_s=float(env.get("ESPRESSO_WEBHOOK_TIMEOUT", "5")),
                       retry=RetryPolicy(max_attempts=int(env.get("ESPRESSO_WEBHOOK_MAX_ATTEMPTS", "4"))))
        except ValueError as exc:
            if isinstance(exc, DeliveryConfigError):
                raise
            raise DeliveryConfigError(f"webhook: bad number in ESPRESSO_WEBHOOK_*: {exc}") from exc


_RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))


class WebhookChannel:
    """POSTs message records; one instance per provider, used from one event loop."""

    def __init__(self, config: WebhookConfig, *, environ: Mapping[str, str] | None = None,
                 rng: random.Random | None = None,
                 on_breaker_change: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.name = config.name
        self._headers = {"Content-Type": "application/json", **config.headers}
        token = secret_from_env(config.auth_env, f"webhook {config.name} auth header", environ)
        if token is not None:
            self._headers[config.auth_header] = token
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(config.breaker, on_change=on_breaker_change)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r}, url={self.config.url!r}, auth_env={self.config.auth_env!r})"

    @property
    def max_duration_s(self) -> float:
        c = self.config
        return c.timeout_s * c.retry.max_attempts + c.retry.max_s * (c.retry.max_attempts - 1)

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.config.max_connections)
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            # no cookies, no decompression, no redirects: a webhook answer is only a status
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                  cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, message: Mapping[str, Any]) -> SendResult:
        if self._session is None:
            await self.start()
        message_id = message.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            return SendResult.failure("bad_message", "message_id missing", 0)
        body = orjson.dumps(message)
        headers = {**self._headers, "Idempotency-Key": message_id}
        retry = self.config.retry
        last = SendResult.failure("circuit_open", "", 0)
        for attempt in range(1, retry.max_attempts + 1):
            if not self.breaker.allow():
                return SendResult.failure("circuit_open", f"breaker open; last: {last.reason}", attempt - 1)
            result, retryable, wait_hint = await self._post_once(body, headers, attempt)
            if result.ok or not retryable or attempt == retry.max_attempts:
                return result
            last = result
            wait = retry.backoff_s(attempt, self._rng)
            if wait_hint is not None:
                wait = max(wait, min(wait_hint, retry.max_s))
            await asyncio.sleep(wait)
        return last

    async def _post_once(self, body: bytes, headers: dict, attempt: int) -> tuple[SendResult, bool, float | None]:
        """(result, retryable, Retry-After seconds) of one POST; feeds the breaker."""
        assert self._session is not None
        try:
            async with self._session.post(self.config.url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                await resp.read()
                status = resp.status
                retry_after = _retry_after_s(resp.headers.get("Retry-After"))
        except TimeoutError:
            self.breaker.record(False)
            return SendResult.failure("timeout", f"no response within {self.config.timeout_s}s", attempt), True, None
        except aiohttp.ClientError as exc:
            self.breaker.record(False)
            return SendResult.failure("connection_error", type(exc).__name__, attempt), True, None
        if status < 300:
            self.breaker.record(True)
            return SendResult.success(attempt), False, None
        if status >= 500:
            self.breaker.record(False)
        elif status == 429:
            self.breaker.release()
        else:
            self.breaker.record(True)  # the provider answered: it is up, the request was refused
        return SendResult.failure(f"http_{status}", f"HTTP {status}", attempt), status in _RETRYABLE_STATUS, retry_after


def _retry_after_s(value: str | None) -> float | None:
    """Seconds in a `Retry-After` header given as a number; None otherwise (dates ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
