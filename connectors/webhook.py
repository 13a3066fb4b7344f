"""HTTP webhook channel: JSON POST of the message record to a provider URL, one by one or in batches.

Each request carries `Idempotency-Key: <message_id>` so a provider that honours it drops a
repeated delivery, and the auth header whose value comes from the environment variable
named by `WebhookConfig.auth_env` (the value is never logged nor kept in the config).

Retries: on 5xx, 429, timeouts and connection errors, up to `retry.max_attempts` tries with
exponential backoff and full jitter (a `Retry-After` in seconds on 429/503 is honoured, up to
`retry.max_s`). Any other 4xx fails at once: sending it again would not help. A circuit
breaker counts 5xx, timeouts and connection errors; while it is open, sends fail at once
with reason `circuit_open`.

Batch option (`batch_size` > 1, `ESPRESSO_WEBHOOK_BATCH`): messages sent at about the same
time go out together, up to `batch_size` per request, as `{"messages": [record, ...]}`; the
provider answers `{"results": [{"message_id": ..., "status": 200}, ...]}` and each message gets
the outcome of its own status (a 2xx without a `results` list accepts them all). Messages a
batch answer refuses with 429/5xx, or leaves out, are retried in a later batch, each with its
own attempts; an answer for the whole request (5xx, 429, timeout, connection lost) applies to
every message of it. Most email and SMS providers take batches: one request, its TLS and the
per-request CPU are shared by up to `batch_size` messages (docs/delivery.md, "Batch option").

Reason codes: `http_<status>`, `timeout`, `connection_error`, `circuit_open`, `bad_message`,
`batch_incomplete` (a batch answer that left the message out).

HTTP goes through `connectors.http1` (one prepared write and one future per request), not
aiohttp, whose per-request machinery was the largest CPU cost of `espresso deliver`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from connectors.breaker import BreakerConfig, CircuitBreaker
from connectors.delivery import DeliveryConfigError, RetryPolicy, SendResult, secret_from_env
from connectors.http1 import Http1Pool, HttpConnectionError, Response

__all__ = ["WebhookChannel", "WebhookConfig"]


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to POST.

    `auth_env` names the environment variable holding the value of header `auth_header`
    (e.g. `ESPRESSO_WEBHOOK_TOKEN` holding `Bearer abc...`); None sends no auth header.
    `timeout_s` bounds one request (connect + response); `max_connections` the pool;
    `batch_size` > 1 posts up to that many messages per request (module doc).
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
    batch_size: int = 1

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DeliveryConfigError(f'"url" must be an http(s) URL: {self.url!r}')
        if self.timeout_s <= 0:
            raise DeliveryConfigError(f'"timeout_s" must be > 0: {self.timeout_s}')
        if self.max_connections < 1:
            raise DeliveryConfigError(f'"max_connections" must be >= 1: {self.max_connections}')
        if not 1 <= self.batch_size <= 10_000:
            raise DeliveryConfigError(f'"batch_size" must be 1-10000: {self.batch_size}')


    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, name: str = "webhook") -> WebhookConfig:
        """From `ESPRESSO_WEBHOOK_URL` (required), `ESPRESSO_WEBHOOK_TIMEOUT` (seconds),
        `ESPRESSO_WEBHOOK_MAX_ATTEMPTS`, `ESPRESSO_WEBHOOK_BATCH` (messages per request, default 1);
        the auth header value is read from
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
                       batch_size=int(env.get("ESPRESSO_WEBHOOK_BATCH", "1")),
                       retry=RetryPolicy(max_attempts=int(env.get("ESPRESSO_WEBHOOK_MAX_ATTEMPTS", "4"))))
        except ValueError as exc:
            if isinstance(exc, DeliveryConfigError):
                raise
            raise DeliveryConfigError(f"webhook: bad number in ESPRESSO_WEBHOOK_*: {exc}") from exc


_RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))

#: one attempt's outcome: (result, retryable, Retry-After seconds)
Outcome = tuple[SendResult, bool, "float | None"]


class WebhookChannel:
    """POSTs message records, alone or in batches; one instance per provider, one event loop."""

    def __init__(self, config: WebhookConfig, *, environ: Mapping[str, str] | None = None,
                 rng: random.Random | None = None,
                 on_breaker_change: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.name = config.name
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity", **config.headers}
        token = secret_from_env(config.auth_env, f"webhook {config.name} auth header", environ)
        if token is not None:
            self._headers[config.auth_header] = token
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(config.breaker, on_change=on_breaker_change)
        self._pool: Http1Pool | None = None
        self._pending: list[tuple[Mapping[str, Any], int, asyncio.Future]] = []
        self._flush_scheduled = False
        self._posts: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r}, url={self.config.url!r}, auth_env={self.config.auth_env!r})"

    @property
    def batch_size(self) -> int:
        """Messages per request (1: one POST per message); `espresso deliver` sizes its sends by it."""
        return self.config.batch_size

    @property
    def max_duration_s(self) -> float:
        c = self.config
        return c.timeout_s * c.retry.max_attempts + c.retry.max_s * (c.retry.max_attempts - 1)

    async def start(self) -> None:
        if self._pool is None:
            try:
                self._pool = Http1Pool(self.config.url, max_connections=self.config.max_connections,
                                       timeout_s=self.config.timeout_s, headers=self._headers)
            except ValueError as exc:
                raise DeliveryConfigError(f"webhook {self.name}: {exc}") from None

    async def close(self) -> None:
        if self._posts:
            await asyncio.gather(*self._posts, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def send(self, message: Mapping[str, Any]) -> SendResult:
        if self._pool is None:
            await self.start()
        message_id = message.get("message_id")
        if not isinstance(message_id, str) or not message_id or "\r" in message_id or "\n" in message_id:
            return SendResult.failure("bad_message", "message_id missing or not one line", 0)
        batched = self.config.batch_size > 1
        body = b"" if batched else orjson.dumps(message)
        key = b"Idempotency-Key: %s\r\n" % message_id.encode()
        retry = self.config.retry
        last = SendResult.failure("circuit_open", "", 0)
        for attempt in range(1, retry.max_attempts + 1):
            if batched:
                result, retryable, wait_hint = await self._in_batch(message, attempt)
            else:
                if not self.breaker.allow():
                    return SendResult.failure("circuit_open", f"breaker open; last: {last.reason}", attempt - 1)
                result, retryable, wait_hint = await self._post_once(body, key, attempt)
            if result.ok or not retryable or attempt == retry.max_attempts:
                return result
            last = result
            wait = retry.backoff_s(attempt, self._rng)
            if wait_hint is not None:
                wait = max(wait, min(wait_hint, retry.max_s))
            await asyncio.sleep(wait)
        return last

    async def _post(self, body: bytes, headers: bytes, attempt: int) -> tuple[Response | None, Outcome]:
        """One POST: (the answer, or None with the failure), feeding the breaker."""
        assert self._pool is not None
        try:
            resp = await self._pool.post(body, headers)
        except TimeoutError:
            self.breaker.record(False)
            return None, (SendResult.failure("timeout", f"no response within {self.config.timeout_s}s", attempt),
                          True, None)
        except HttpConnectionError as exc:
            self.breaker.record(False)
            cause = exc.__cause__
            return None, (SendResult.failure("connection_error", type(cause or exc).__name__, attempt), True, None)
        status = resp.status
        if status < 300:
            self.breaker.record(True)
            return resp, (SendResult.success(attempt), False, None)
        if status >= 500:
            self.breaker.record(False)
        elif status == 429:
            self.breaker.release()
        else:
            self.breaker.record(True)  # the provider answered: it is up, the request was refused
        return resp, (SendResult.failure(f"http_{status}", f"HTTP {status}", attempt), status in _RETRYABLE_STATUS,
                      _retry_after_s(resp.headers.get("retry-after")))

    async def _post_once(self, body: bytes, headers: bytes, attempt: int) -> Outcome:
        return (await self._post(body, headers, attempt))[1]

    # ---- batch option ------------------------------------------------------------------------

    def _in_batch(self, message: Mapping[str, Any], attempt: int) -> asyncio.Future:
        """Join the next batch; resolves to this message's outcome of that request."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((message, attempt, future))
        if len(self._pending) >= self.config.batch_size:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)  # after every send started in this loop iteration
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        size = self.config.batch_size
        while self._pending:
            batch, self._pending = self._pending[:size], self._pending[size:]
            task = asyncio.get_running_loop().create_task(self._post_batch(batch))
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)

    async def _post_batch(self, batch: list[tuple[Mapping[str, Any], int, asyncio.Future]]) -> None:
        try:
            outcomes = await self._batch_outcomes(batch)
        except Exception as exc:  # a bug: every message of the batch fails as data
            outcomes = [(SendResult.failure("internal_error", type(exc).__name__, a), False, None)
                        for _m, a, _f in batch]
        for (_m, _a, future), outcome in zip(batch, outcomes):
            if not future.done():
                future.set_result(outcome)

    async def _batch_outcomes(self, batch: list[tuple[Mapping[str, Any], int, asyncio.Future]]) -> list[Outcome]:
        attempts = [a for _m, a, _f in batch]
        if not self.breaker.allow():
            return [(SendResult.failure("circuit_open", "breaker open", a - 1), False, None) for a in attempts]
        body = orjson.dumps({"messages": [m for m, _a, _f in batch]})
        resp, whole = await self._post(body, b"", max(attempts))
        if resp is None or not whole[0].ok:
            result = whole[0]
            return [(SendResult(result.ok, result.reason, result.detail, a), whole[1], whole[2]) for a in attempts]
        status_of = _batch_statuses(resp.body)
        if status_of is None:  # a 2xx for the whole batch, no per-message results: all accepted
            return [(SendResult.success(a), False, None) for a in attempts]
        out: list[Outcome] = []
        for (message, attempt, _f) in batch:
            status = status_of.get(message["message_id"])
            if status is None:
                out.append((SendResult.failure("batch_incomplete", "not in the batch answer", attempt), True, None))
            elif 200 <= status < 300:
                out.append((SendResult.success(attempt), False, None))
            else:
                out.append((SendResult.failure(f"http_{status}", f"HTTP {status} in a batch answer", attempt),
                            status in _RETRYABLE_STATUS, None))
        return out


def _batch_statuses(body: bytes) -> dict[str, int] | None:
    """message_id -> status from a batch answer `{"results": [{"message_id", "status"}, ...]}`;
    None when the answer has no such list (then the 2xx accepts the whole batch)."""
    try:
        answer = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        return None
    out: dict[str, int] = {}
    for r in results:
        if isinstance(r, dict) and isinstance(r.get("message_id"), str) and isinstance(r.get("status"), int):
            out[r["message_id"]] = r["status"]
    return out


def _retry_after_s(value: str | None) -> float | None:
    """Seconds in a `Retry-After` header given as a number; None otherwise (dates ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
