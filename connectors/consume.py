"""Reading a Kafka consumer without holding partial batches."""

from __future__ import annotations

from typing import Any

__all__ = ["next_batch"]


def next_batch(consumer: Any, size: int, timeout: float) -> list:
    """Up to `size` messages: those already fetched, without waiting for more; when there are
    none, the first to arrive within `timeout` s and whatever came with it. (`consume(size,
    timeout)` alone would hold a partial batch until `size` messages or the timeout: up to
    `timeout` of added latency whenever traffic is below `size` per `timeout`.)"""
    batch = consumer.consume(size, 0)
    if batch:
        return batch
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]
