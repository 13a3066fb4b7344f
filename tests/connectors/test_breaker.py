"""Circuit breaker states, driven by a fake clock."""

from __future__ import annotations

import pytest

from connectors.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig, CircuitBreaker
from connectors.delivery import DeliveryConfigError, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures():
    """N consecutive failures open the breaker; a success in between resets the count."""
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, cooldown_s=10), clock)
    for ok in (False, False, True, False, False):
        assert b.allow()
        b.record(ok)
    assert b.state == CLOSED
    b.record(False)
    assert b.state == OPEN and not b.allow()


def test_half_open_lets_one_probe_through_after_cooldown():
    """After the cool-down exactly one probe passes; its success closes the breaker."""
    clock = Clock()
    changes = []
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=10), clock,
                       on_change=lambda old, new: changes.append(new))
    b.record(False)
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.1
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()
    b.record(True)
    assert b.state == CLOSED and b.allow()
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_failed_probe_reopens_for_a_new_cooldown():
    """A failed half-open probe opens the breaker again, counted from the probe's end."""
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=10), clock)
    b.record(False)
    clock.now += 10
    assert b.allow()
    clock.now += 3
    b.record(False)
    assert b.state == OPEN
    clock.now += 9
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_release_frees_the_probe_without_a_verdict():
    """A probe that ends with no verdict (429) lets the next caller probe."""
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=1), clock)
    b.record(False)
    clock.now += 1
    assert b.allow() and not b.allow()
    b.release()
    assert b.allow()


def test_config_errors_name_parameter_and_value():
    """Bad settings raise at construction with the parameter, the rule and the value."""
    with pytest.raises(DeliveryConfigError, match='"failure_threshold" must be >= 1: 0'):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(DeliveryConfigError, match='"max_attempts" must be >= 1: 0'):
        RetryPolicy(max_attempts=0)


def test_backoff_is_full_jitter_under_an_exponential_cap():
    """Waits stay within [0, min(max, base * 2**(n-1))] and use the whole range."""
    import random
    policy = RetryPolicy(max_attempts=10, base_s=0.1, max_s=1.0)
    rng = random.Random(7)
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        waits = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert min(waits) < cap * 0.1 and max(waits) > cap * 0.9
