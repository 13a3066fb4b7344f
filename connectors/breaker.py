"""Circuit breaker: stop calling a provider that keeps failing, probe it again after a pause.

States: `closed` (calls pass; `failure_threshold` consecutive failures open it), `open`
(calls are refused until `cooldown_s` has passed since opening), `half_open` (one probe
call at a time is let through: success closes the breaker, failure opens it again for a
new cool-down). Time comes from `clock` so tests drive it. Not thread-safe: one breaker
lives on one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from connectors.delivery import DeliveryConfigError

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "BreakerConfig", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """`failure_threshold` consecutive failures open the breaker for `cooldown_s` seconds."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise DeliveryConfigError(f'"failure_threshold" must be >= 1: {self.failure_threshold}')
        if self.cooldown_s <= 0:
            raise DeliveryConfigError(f'"cooldown_s" must be > 0: {self.cooldown_s}')


class CircuitBreaker:
    """Counts consecutive failures; `allow()` before a call, `record(ok)` after it."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """Current state; an open breaker whose cool-down is over reads `half_open`."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.config.cooldown_s:
            self._set(HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """True when a call may go out now; in half-open, only the first caller gets True."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, ok: bool) -> None:
        """Result of a call that `allow()` let through."""
        if self._state == HALF_OPEN:
            self._probing = False
            if ok:
                self._failures = 0
                self._set(CLOSED)
            else:
                self._open()
            return
        if ok:
            self._failures = 0
            return
        self._failures += 1
        if self._state == CLOSED and self._failures >= self.config.failure_threshold:
            self._open()

    def release(self) -> None:
        """A call let through ended with no verdict on the provider (e.g. a 4xx): free the probe."""
        if self._state == HALF_OPEN:
            self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(OPEN)

    def _set(self, state: str) -> None:
        if state != self._state:
            old, self._state = self._state, state
            if self._on_change is not None:
                self._on_change(old, state)
