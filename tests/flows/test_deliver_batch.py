"""`espresso deliver` takes what the consumer has fetched instead of waiting for a full batch."""

from __future__ import annotations

from flows.deliver import next_batch


class FakeConsumer:
    """`consume(n, timeout)` as librdkafka does it: returns once `n` messages are there or the
    timeout passed; `poll(timeout)` returns the first message to arrive. `arrivals[i]` is when
    message i arrives (seconds on a fake clock that only waiting moves)."""

    def __init__(self, arrivals: list[float]) -> None:
        self.arrivals, self.now, self.next = arrivals, 0.0, 0

    def _ready(self) -> int:
        return sum(1 for t in self.arrivals[self.next:] if t <= self.now)

    def _take(self, n: int) -> list[int]:
        out = list(range(self.next, self.next + n))
        self.next += n
        return out

    def consume(self, n: int, timeout: float) -> list[int]:
        if self._ready() < n:
            later = sorted(t for t in self.arrivals[self.next:] if t > self.now)
            needed = later[n - self._ready() - 1] if len(later) >= n - self._ready() else float("inf")
            self.now = min(self.now + timeout, needed)
        return self._take(min(n, self._ready()))

    def poll(self, timeout: float) -> int | None:
        if not self._ready():
            later = [t for t in self.arrivals[self.next:] if t > self.now]
            self.now = min(self.now + timeout, min(later, default=float("inf")))
        got = self._take(1) if self._ready() else []
        return got[0] if got else None


def test_a_partial_batch_is_returned_at_once():
    """Three messages waiting, batch size 500: all three now, without waiting 0.5 s for more."""
    c = FakeConsumer([0.0, 0.0, 0.0, 10.0])
    assert next_batch(c, 500, 0.5) == [0, 1, 2]
    assert c.now == 0.0


def test_an_idle_consumer_waits_for_the_first_message_only():
    """Nothing fetched: the first message to arrive ends the wait; what came with it is taken too."""
    c = FakeConsumer([0.2, 0.2, 0.3])
    assert next_batch(c, 500, 0.5) == [0, 1]
    assert c.now == 0.2
    assert next_batch(c, 500, 0.5) == [2]
    assert c.now == 0.3
    assert next_batch(c, 500, 0.5) == []
    assert c.now == 0.8


def test_never_more_than_the_batch_size():
    c = FakeConsumer([0.0] * 7)
    assert next_batch(c, 3, 0.5) == [0, 1, 2]
    assert next_batch(c, 3, 0.5) == [3, 4, 5]
    assert next_batch(c, 1, 0.5) == [6]
    c = FakeConsumer([0.1, 0.1])
    assert next_batch(c, 1, 0.5) == [0]
