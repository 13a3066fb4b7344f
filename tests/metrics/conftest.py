"""Fixtures: a fresh registry, a fake clock and the `EspressoMetrics` built on them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from metrics.registry import EspressoMetrics


class FakeClock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: FakeClock) -> EspressoMetrics:
    return EspressoMetrics(registry, clock=clock, version="1.2.3")


@pytest.fixture
def value(registry: CollectorRegistry):
    """`value(name, **labels)`: the sample's value in the registry, 0.0 when absent... or None."""

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    return get
