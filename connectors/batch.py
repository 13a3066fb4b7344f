"""The item every source emits: a batch of raw records of one input partition."""

from __future__ import annotations

from typing import NamedTuple

from state.intake import Parsed

__all__ = ["RawBatch"]


class RawBatch(NamedTuple):
    """What a source emits: raw records of one partition, with their source info."""

    partition: str
    records: list  # [(bytes, position)]: a line number or a Kafka offset
    origin: dict  # where the records come from: {"file": ...} or {"topic", "partition"}
    position_key: str  # "line" or "offset"
    arrival_ms: int  # wall clock when the batch was read
    parsed: Parsed | None = None  # already parsed by a helper process (then `records` is empty)
    tick: tuple[int, int] | None = None  # (k, n): end of a finite input, step k of n towards `until`
    caught_up: bool = False  # nothing more was there to read on the partition at the last fetch
