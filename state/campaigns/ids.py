"""Deterministic identities of runs and messages: same input, same ids, on any worker or replay."""

from __future__ import annotations

import xxhash

from ..changes import change_id as make_change_id
from ..conditions import resolve
from .model import Campaign
from .records import message_id

__all__ = ["run_id", "run_hex", "value_hash", "value_hashes", "message_ids"]

_xxh64 = xxhash.xxh3_64_intdigest
_xxh128 = xxhash.xxh3_128_hexdigest
_MASK64 = (1 << 64) - 1


def signed(h: int) -> int:
    return h - (1 << 64) if h >= 1 << 63 else h


def run_id(cid: str, camp_id: str, origin: object) -> int:
    """A run's id from its contact, campaign and origin (change id, trigger event id, `date:YEAR`)."""
    return signed(_xxh64(f"{cid}\x1f{camp_id}\x1f{origin}".encode()))


def run_hex(rid: int) -> str:
    return f"{rid & _MASK64:016x}"


def value_hash(v: object) -> int | None:
    """A value's identity for run keys and `match`, stable across processes; None if not a scalar."""
    t = type(v)
    if t is str:
        b = b"s" + v.encode()  # type: ignore[union-attr]
    elif t is bool:
        b = b"b1" if v else b"b0"
    elif t is int or (t is float and v.is_integer()):  # type: ignore[union-attr]
        b = b"n%d" % int(v)  # type: ignore[arg-type]
    elif t is float:
        b = b"f" + repr(v).encode()
    else:
        return None
    return signed(_xxh64(b)) or 1


def value_hashes(props: dict, path: tuple[str, ...]) -> set[int]:
    out = set()
    for v in resolve(props, path):
        h = value_hash(v)
        if h is not None:
            out.add(h)
    return out




def message_ids(c: Campaign, step_id: str, rid: int, obj: object, cid: str, start: int,
                key: int) -> tuple[str, str | None, str | None]:
    """(message id, change id, step id) of a run's step: a one-message segment campaign keeps
    the id of its change (unchanged since before runs), others hash run and step."""
    if isinstance(obj, str):
        chid: str | None = obj
    elif c.segment is not None and key:
        chid = make_change_id(cid, c.segment, c.on, start, key)
    else:
        chid = None
    if not c.sequence:
        return message_id(chid, c.id), chid, None  # type: ignore[arg-type]
    return _xxh128(f"{run_hex(rid)}\x1f{step_id}".encode()), chid, step_id or None
