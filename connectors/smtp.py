"""SMTP email channel (aiosmtplib): renders a MIME message and sends it, STARTTLS and AUTH.

The message record gives `to.email` (and optional `to.name`), `subject`, `body` (text) and an
optional `html` alternative; `data.unsubscribe_url`, when present, becomes a one-click
`List-Unsubscribe` header (RFC 8058). `Message-ID` is derived from `message_id`, so a mail
system that dedupes on it sees a repeated delivery as the same mail.

User and password come from the environment variables named by `SmtpConfig.username_env` and
`password_env`. Connections are kept in a small pool and reused. Replies 4xx, timeouts and
lost connections are retried (backoff with full jitter); 5xx replies fail at once.

Reason codes: `smtp_<code>`, `smtp_auth`, `timeout`, `connection_error`, `circuit_open`,
`bad_message`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib

from connectors.breaker import BreakerConfig, CircuitBreaker
from connectors.delivery import DeliveryConfigError, RetryPolicy, SendResult, required, secret_from_env

__all__ = ["SmtpChannel", "SmtpConfig", "render_email"]


@dataclass(frozen=True)
class SmtpConfig:
    """SMTP server and sender identity.

    `starttls`: upgrade a plain connection with STARTTLS (required when True; never when
    False); `implicit_tls`: TLS from the first byte (port 465), exclusive with `starttls`.
    `ca_file`: extra CA bundle to trust (a private relay); certificates are always verified.
    """

    host: str
    port: int = 587
    from_addr: str = ""
    from_name: str = ""
    starttls: bool = True
    implicit_tls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    timeout_s: float = 10.0
    max_connections: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    name: str = "smtp"

    def __post_init__(self) -> None:
        if not self.host:
            raise DeliveryConfigError('"host" must be set')
        if not 0 < self.port < 65536:
            raise DeliveryConfigError(f'"port" must be in 1..65535: {self.port}')
        if "@" not in self.from_addr:
            raise DeliveryConfigError(f'"from_addr" must be an email address: {self.from_addr!r}')
        if self.starttls and self.implicit_tls:
            raise DeliveryConfigError('"starttls" and "implicit_tls" are exclusive: both true')
        if (self.username_env is None) != (self.password_env is None):
            raise DeliveryConfigError('"username_env" and "password_env" go together: only one set')
        if self.timeout_s <= 0 or self.max_connections < 1:
            raise DeliveryConfigError(
                f'"timeout_s" must be > 0 and "max_connections" >= 1: {self.timeout_s}, {self.max_connections}')


    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, name: str = "smtp") -> SmtpConfig:
        """From `ESPRESSO_SMTP_HOST` (required), `_PORT` (587), `_FROM` (required), `_FROM_NAME`,
        `_TLS` (`starttls` default, `implicit` or `none`), `_CA_FILE`; credentials are read
        from `ESPRESSO_SMTP_USER` / `ESPRESSO_SMTP_PASSWORD` when both are set."""
        env = {} if environ is None else environ  # the caller (commands/) reads the environment
        tls = env.get("ESPRESSO_SMTP_TLS", "starttls")
        if tls not in ("starttls", "implicit", "none"):
            raise DeliveryConfigError(f'ESPRESSO_SMTP_TLS must be "starttls", "implicit" or "none": {tls!r}')
        creds = bool(env.get("ESPRESSO_SMTP_USER")) and bool(env.get("ESPRESSO_SMTP_PASSWORD"))
        try:
            port = int(env.get("ESPRESSO_SMTP_PORT", "465" if tls == "implicit" else "587"))
        except ValueError as exc:
            raise DeliveryConfigError(f"ESPRESSO_SMTP_PORT must be a number: {exc}") from exc
        return cls(host=env.get("ESPRESSO_SMTP_HOST", ""), port=port, name=name,
                   from_addr=env.get("ESPRESSO_SMTP_FROM", ""), from_name=env.get("ESPRESSO_SMTP_FROM_NAME", ""),
                   starttls=tls == "starttls", implicit_tls=tls == "implicit",
                   username_env="ESPRESSO_SMTP_USER" if creds else None,
                   password_env="ESPRESSO_SMTP_PASSWORD" if creds else None,
                   ca_file=env.get("ESPRESSO_SMTP_CA_FILE") or None)


def render_email(message: Mapping[str, Any], from_addr: str, from_name: str = "") -> EmailMessage:
    """The MIME message for one record; raises ValueError when a required field is missing."""
    to = required(message, "to", "email")
    message_id = required(message, "message_id")
    if to is None or message_id is None:
        raise ValueError("to.email and message_id are required")
    mail = EmailMessage()
    mail["From"] = formataddr((_one_line(from_name), from_addr)) if from_name else from_addr
    name = required(message, "to", "name")
    mail["To"] = formataddr((_one_line(name), to)) if name else to
    mail["Subject"] = _one_line(message.get("subject") or "")
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = f"<{message_id}@{from_addr.rpartition('@')[2]}>"
    mail["X-Espresso-Message-Id"] = str(message_id)
    if message.get("campaign_id"):
        mail["X-Espresso-Campaign"] = _one_line(message["campaign_id"])
    unsubscribe = required(message, "data", "unsubscribe_url")
    if unsubscribe:
        mail["List-Unsubscribe"] = f"<{_one_line(unsubscribe)}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(str(message.get("body") or ""))
    html = message.get("html")
    if html:
        mail.add_alternative(str(html), subtype="html")
    return mail


def _one_line(value: object) -> str:
    """Header text with line breaks flattened, so a field cannot inject headers."""
    return " ".join(str(value).split())


class SmtpChannel:
    """Sends rendered emails through one SMTP server; used from one event loop."""

    def __init__(self, config: SmtpConfig, *, environ: Mapping[str, str] | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.name = config.name
        self._username = secret_from_env(config.username_env, f"smtp {config.name} user", environ)
        self._password = secret_from_env(config.password_env, f"smtp {config.name} password", environ)
        self._tls = ssl.create_default_context(cafile=config.ca_file) if (config.starttls or config.implicit_tls) else None
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(config.breaker)
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        c = self.config
        return f"SmtpChannel(name={self.name!r}, host={c.host!r}, port={c.port}, username_env={c.username_env!r})"

    @property
    def max_duration_s(self) -> float:
        c = self.config
        return 2 * c.timeout_s * c.retry.max_attempts + c.retry.max_s * (c.retry.max_attempts - 1)

    async def start(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_connections)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                await smtp.quit(timeout=self.config.timeout_s)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                smtp.close()

    async def send(self, message: Mapping[str, Any]) -> SendResult:
        await self.start()
        try:
            mail = render_email(message, self.config.from_addr, self.config.from_name)
        except (ValueError, TypeError) as exc:
            return SendResult.failure("bad_message", str(exc), 0)
        retry = self.config.retry
        result = SendResult.failure("circuit_open", "", 0)
        for attempt in range(1, retry.max_attempts + 1):
            if not self.breaker.allow():
                return SendResult.failure("circuit_open", f"breaker open; last: {result.reason}", attempt - 1)
            result, retryable = await self._send_once(mail, attempt)
            self.breaker.record(result.ok or not retryable)
            if result.ok or not retryable or attempt == retry.max_attempts:
                return result
            await asyncio.sleep(retry.backoff_s(attempt, self._rng))
        return result

    async def _send_once(self, mail: EmailMessage, attempt: int) -> tuple[SendResult, bool]:
        assert self._slots is not None
        async with self._slots:
            for _ in range(2):
                try:
                    smtp, reused = await self._connection()
                except Exception as exc:  # noqa: BLE001 - sorted into data by _classify
                    return _classify(exc, attempt)
                try:
                    await smtp.send_message(mail)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    smtp.close()
                    if not reused:
                        return _classify(exc, attempt)
                    self._drop_idle()  # pooled connections had gone stale: once more, fresh
                    continue
                except Exception as exc:  # noqa: BLE001
                    smtp.close()
                    return _classify(exc, attempt)
                self._idle.append(smtp)
                return SendResult.success(attempt), False
        return SendResult.failure("connection_error", "server disconnected", attempt), True

    async def _connection(self) -> tuple[aiosmtplib.SMTP, bool]:
        """(connected and authenticated client, taken from the pool); raises as aiosmtplib does."""
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp, True
        c = self.config
        smtp = aiosmtplib.SMTP(hostname=c.host, port=c.port, timeout=c.timeout_s,
                               use_tls=c.implicit_tls, start_tls=c.starttls,
                               tls_context=self._tls, username=self._username, password=self._password)
        try:
            await smtp.connect()
        except BaseException:
            smtp.close()
            raise
        return smtp, False

    def _drop_idle(self) -> None:
        for smtp in self._idle:
            smtp.close()
        self._idle.clear()


def _classify(exc: BaseException, attempt: int) -> tuple[SendResult, bool]:
    """(failure, retryable) for an exception raised by aiosmtplib or the network."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SendResult.failure("smtp_auth", f"authentication refused ({exc.code})", attempt), False
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        code = codes[0] if codes else 550
        return SendResult.failure(f"smtp_{code}", "recipient refused", attempt), 400 <= code < 500
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SendResult.failure(f"smtp_{exc.code}", _one_line(exc.message)[:200], attempt), 400 <= exc.code < 500
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError)):
        return SendResult.failure("timeout", "SMTP timeout", attempt), True
    if isinstance(exc, (aiosmtplib.SMTPException, OSError, ssl.SSLError)):
        return SendResult.failure("connection_error", type(exc).__name__, attempt), True
    return SendResult.failure("smtp_error", type(exc).__name__, attempt), False
