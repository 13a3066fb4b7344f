"""Snapshot blobs with their big arrays out of band: one copy of each column into the blob.

A plain pickle of a shard copies each column two or three times (`tobytes`, the write, the
growth of the output buffer) and, in a long-running process, took 0.45 to 2 s for 3M
contacts where this takes 0.33 s (BENCHMARKS.md, "Snapshots that cost what changed").
Layout: MAGIC, the header's length, the number of buffers and each one's length (8 bytes
each, little-endian), the protocol-5 pickle, then the buffers. Numpy arrays (a delta's
columns) go out of band by themselves; a state's `array` columns are wrapped for it.
"""

from __future__ import annotations

import pickle
import struct
from array import array
from dataclasses import replace
from typing import Any

from .shard import ShardState

__all__ = ["pack", "unpack", "pack_state", "unpack_state"]

MAGIC = b"ESPB1\x00"
_U64 = struct.Struct("<Q")


def pack(obj: Any) -> bytes:
    buffers: list = []
    header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    sizes = struct.pack(f"<{2 + len(raws)}Q", len(header), len(raws), *(r.nbytes for r in raws))
    return b"".join([MAGIC, sizes, header, *raws])


def unpack(blob: bytes) -> Any:
    """`pack`'s object (its arrays viewing `blob`); a plain pickle as it is."""
    if not blob.startswith(MAGIC):
        return pickle.loads(blob)
    at = len(MAGIC)
    (hlen,), (count,) = _U64.unpack_from(blob, at), _U64.unpack_from(blob, at + 8)
    sizes = struct.unpack_from(f"<{count}Q", blob, at + 16)
    at += 16 + 8 * count
    view = memoryview(blob)
    header, at = view[at:at + hlen], at + hlen
    buffers = []
    for n in sizes:
        buffers.append(view[at:at + n])
        at += n
    return pickle.loads(header, buffers=buffers)


def pack_state(state: ShardState) -> bytes:
    """A whole shard state (a base), its columns out of band."""
    return pack(replace(state, ints=[pickle.PickleBuffer(a) for a in state.ints],
                        floats=[pickle.PickleBuffer(a) for a in state.floats]))


def unpack_state(blob: bytes) -> ShardState:
    state = unpack(blob)
    if not isinstance(state, ShardState):
        raise ValueError(f"not a shard state: {type(state).__name__}")
    return replace(state, ints=[_column("q", c) for c in state.ints], floats=[_column("d", c) for c in state.floats])


def _column(code: str, col: Any) -> array:
    if isinstance(col, array):
        return col
    a = array(code)
    a.frombytes(col)
    return a
