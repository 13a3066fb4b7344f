"""Bounded memory of recently seen event ids, to drop redelivered events.

Two generations of open-addressing tables of 64-bit id hashes in `array('Q')`: about
32 bytes per remembered id, a quarter of a Python set of ints. When the current
generation is full, it becomes the previous one and the oldest is forgotten, so the last
`horizon` distinct ids are always remembered (and up to `2 * horizon`).
"""

from __future__ import annotations

import pickle
from array import array

import xxhash

__all__ = ["SeenIds", "id_hash", "DEFAULT_HORIZON"]

#: Distinct event ids remembered per input partition: ~4 MiB of tables.
DEFAULT_HORIZON = 131_072

_xxh64 = xxhash.xxh64_intdigest


def id_hash(event_id: str) -> int:
    """Stable across processes (unlike `hash`), so snapshots restore the same memory."""
    return _xxh64(event_id.encode()) or 1  # 0 marks an empty slot


class SeenIds:
    """`add(event_id)` answers whether the id was already seen, remembering it if not.

    Ids are hashed inside (not by the caller) to save a call per event on the hot path.
    """

    __slots__ = ("horizon", "_mask", "_cur", "_prev", "_count")

    def __init__(self, horizon: int = DEFAULT_HORIZON) -> None:
        if horizon < 1:
            raise ValueError(f"dedup horizon must be >= 1: {horizon}")
        self.horizon = horizon
        size = 1
        while size < 2 * horizon:  # load factor <= 0.5 keeps probe chains short
            size *= 2
        self._mask = size - 1
        self._cur = array("Q", bytes(8 * size))
        self._prev = array("Q", bytes(8 * size))
        self._count = 0

    def add(self, event_id: str) -> bool:
        h = id_hash(event_id)
        mask = self._mask
        prev = self._prev
        i = h & mask
        while True:
            v = prev[i]
            if v == h:
                return True
            if v == 0:
                break
            i = (i + 1) & mask
        cur = self._cur
        i = h & mask
        while True:
            v = cur[i]
            if v == h:
                return True
            if v == 0:
                break
            i = (i + 1) & mask
        cur[i] = h
        self._count += 1
        if self._count >= self.horizon:
            self._rotate()
        return False

    def add_all_new(self, event_ids: list[str]) -> None:
        """Remember ids known not to be repeats (newer than their contact's clock), in order,
        in one call: the shard's hot loop batches them."""
        mask, cur, count, horizon = self._mask, self._cur, self._count, self.horizon
        for eid in event_ids:
            h = _xxh64(eid.encode()) or 1  # = id_hash(eid), inlined
            i = h & mask
            while True:
                v = cur[i]
                if v == h:
                    break
                if v == 0:
                    cur[i] = h
                    count += 1
                    if count >= horizon:
                        self._count = count
                        self._rotate()
                        cur, count = self._cur, 0
                    break
                i = (i + 1) & mask
        self._count = count

    def _rotate(self) -> None:
        self._prev, self._cur = self._cur, self._prev
        self._cur[:] = array("Q", bytes(8 * (self._mask + 1)))  # reuse the buffer, cleared
        self._count = 0

    def __getstate__(self) -> tuple:
        return (self.horizon, self._mask, self._cur, self._prev, self._count)

    def __setstate__(self, s: tuple) -> None:
        self.horizon, self._mask, self._cur, self._prev, self._count = s

    def __reduce_ex__(self, protocol: int):  # type: ignore[override]
        """With protocol 5 the two tables go out of band (state/blobs.py): written every epoch."""
        cur, prev = self._cur, self._prev
        if protocol >= 5:
            cur, prev = pickle.PickleBuffer(cur), pickle.PickleBuffer(prev)
        return (_restore, (self.horizon, self._mask, cur, prev, self._count))


def _restore(horizon: int, mask: int, cur: object, prev: object, count: int) -> SeenIds:
    seen = SeenIds.__new__(SeenIds)
    seen.__setstate__((horizon, mask, _table(cur), _table(prev), count))
    return seen


def _table(t: object) -> array:
    if isinstance(t, array):
        return t
    a = array("Q")
    a.frombytes(t)  # type: ignore[arg-type]
    return a
