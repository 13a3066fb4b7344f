"""What every delivery channel shares: the send result, the channel protocol, retry timing.

A channel (`webhook`, `smtp`, `kafka_messages`) turns one retargeting message record
(docs/interfaces.md) into one effect in an outside system. A failed delivery is data: a
`SendResult` with a short reason code, never an exception. Only start-up and configuration
errors raise, as `DeliveryConfigError`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from state.errors import ConfigError

__all__ = [
    "Channel",
    "DeliveryConfigError",
    "RetryPolicy",
    "SendResult",
    "required",
    "secret_from_env",
]

class DeliveryConfigError(ConfigError):
    """A delivery setting is missing or wrong; raised at start-up, never per message."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of one channel send, retries included.

    `reason` is a short bounded code (`http_503`, `timeout`, `circuit_open`, `smtp_550`...),
    empty on success; `detail` is for people (never holds a secret); `attempts` counts tries.
    """

    ok: bool
    reason: str = ""
    detail: str = ""
    attempts: int = 1

    @classmethod
    def success(cls, attempts: int = 1) -> SendResult:
        return cls(True, "", "", attempts)

    @classmethod
    def failure(cls, reason: str, detail: str = "", attempts: int = 1) -> SendResult:
        return cls(False, reason, detail, attempts)


class Channel(Protocol):
    """An outside system that messages go to; all methods run on the sender's event loop."""

    name: str

    @property
    def max_duration_s(self) -> float:
        """Upper bound of one `send`, retries included (the idempotency lease must exceed it)."""

    async def start(self) -> None:
        """Open connections; raise `DeliveryConfigError` when the configuration is unusable."""

    async def send(self, message: Mapping[str, Any]) -> SendResult:
        """Deliver one message record; never raises for a delivery failure."""

    async def close(self) -> None:
        """Release connections; pending sends have finished when the sender calls it."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped attempts with exponential backoff and full jitter.

    The wait before attempt n+1 is uniform in [0, min(max_s, base_s * 2**(n-1))] (AWS
    architecture blog, "Exponential Backoff And Jitter"): retries of many senders spread out
    instead of arriving together at a recovering provider.
    """

    max_attempts: int = 4
    base_s: float = 0.2
    max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DeliveryConfigError(f'"max_attempts" must be >= 1: {self.max_attempts}')
        if self.base_s < 0 or self.max_s < self.base_s:
            raise DeliveryConfigError(
                f'"base_s" must be >= 0 and <= "max_s": base_s={self.base_s} max_s={self.max_s}')

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        cap = min(self.max_s, self.base_s * (2 ** (attempt - 1)))
        return (rng or random).uniform(0.0, cap)

    def worst_case_wait_s(self) -> float:
        """Longest total backoff over all attempts, for lease sizing."""
        return sum(min(self.max_s, self.base_s * (2 ** (n - 1))) for n in range(1, self.max_attempts))


def secret_from_env(var: str | None, what: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of environment variable `var` (None when `var` is None); raises when unset.

    The error names the variable and what it is for, never a value.
    """
    if var is None:
        return None
    env = {} if environ is None else environ  # the caller (commands/) reads the environment
    value = env.get(var)
    if not value:
        raise DeliveryConfigError(f"{what}: environment variable {var} is not set or empty")
    return value


def required(message: Mapping[str, Any], *path: str) -> Any:
    """Field at `path` in a message record, or None when absent or empty."""
    value: Any = message
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value if value not in (None, "") else None
