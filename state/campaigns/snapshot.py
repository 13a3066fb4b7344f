"""The engine's snapshot: plain, pickle-able data written with the shard's snapshot."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..dedup import SeenIds

__all__ = ["CampaignState", "Pending", "clone_seen"]


class Pending(tuple):
    """A waiting message of a snapshot written before runs (read only to resume it)."""

    due = property(lambda s: s[0])
    campaign_id = property(lambda s: s[1])
    contact_id = property(lambda s: s[2])
    change_id = property(lambda s: s[5])
    trigger_at = property(lambda s: s[6])
    first_due = property(lambda s: s[7])

    def __new__(cls, *fields):  # type: ignore[no-untyped-def]
        return tuple.__new__(cls, fields)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Pending, tuple(self))


@dataclass
class CampaignState:
    """Snapshot of an engine: plain data, pickle-able, written with the shard's snapshot.

    `contacts`: contact_id -> (clock, ((send ms, channel), ...), {campaign_id: (last send
    ms, run id)}); `runs`: the run store; `campaign_ids`: what the run store's campaign
    numbers meant; `inbox`: trigger and exit events not yet settled; `seen`: their ids;
    `catalog`: the product book and the watches.
    """

    fingerprint: str
    watermark: int
    settled: int
    seq: int
    contacts: dict
    pending: list  # snapshots before runs: [Pending]
    stats: dict = field(default_factory=dict)
    runs: object = None
    campaign_ids: tuple = ()
    inbox: dict = field(default_factory=dict)
    seen: object = None
    catalog: tuple | None = None  # (product book, watches) with catalog triggers


def clone_seen(seen: SeenIds) -> SeenIds:
    horizon, mask, cur, prev, count = seen.__getstate__()
    copy = SeenIds.__new__(SeenIds)
    copy.__setstate__((horizon, mask, array("Q", cur), array("Q", prev), count))
    return copy
