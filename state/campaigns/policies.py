"""What a contact's past sends allow: frequency caps and re-entry, per contact, in event time.

Only what the policies need is remembered: the sends inside the longest cap window and,
per campaign, the last send (instant and run) for `once` / `once_per`.
"""

from __future__ import annotations

from ..timeutil import NEVER, format_ms
from .model import Campaign, Cap

__all__ = ["Memo", "blocked", "reentry_refusal"]


class Memo:
    """One contact's decision clock, recent sends and last send per campaign."""

    __slots__ = ("clock", "sends", "fired", "expires", "released", "touches", "held")

    def __init__(self, clock: int = NEVER, sends: list | None = None, fired: dict | None = None) -> None:
        self.clock = clock
        self.sends: list[tuple[int, str]] = sends if sends is not None else []
        #: campaign id -> (last send ms, run id of that send)
        self.fired: dict[str, tuple[int, int]] = fired if fired is not None else {}
        self.expires = NEVER  # last instant pushed on the engine's expiry heap for this contact
        #: attribution (None until used): message key -> (campaign, step, variant, message id,
        #: released ms); touches inside the longest window: (ms, is_click, message key); the
        #: latest holdout decision per campaign: campaign -> (ms, step)
        self.released: dict | None = None
        self.touches: list | None = None
        self.held: dict | None = None


def blocked(caps: tuple[Cap, ...], sends: list[tuple[int, str]], channel: str, t: int) -> list[tuple[str, int]]:
    """Caps a send on `channel` at `t` would break, each with the instant it frees again."""
    if not sends:
        return []
    out = []
    for cap in caps:
        if cap.channel is not None and cap.channel != channel:
            continue
        low = t - cap.per_ms
        times = [s for s, ch in sends if s > low and (cap.channel is None or ch == cap.channel)]
        if len(times) >= cap.max:
            times.sort(reverse=True)
            out.append((cap.name, times[cap.max - 1] + cap.per_ms))
    return out


def reentry_refusal(camp: Campaign, memo: Memo | None, t: int, rid: int, key: str | None = None) -> tuple[str, str] | None:
    """(reason, detail) when the campaign's re-entry rule refuses a send of run `rid` at `t`:
    a send of another run of the campaign counts, the run's own earlier steps do not.
    `key`: what `Memo.fired` counts under when not the campaign (a catalog campaign's product)."""
    if memo is None or camp.reentry == "every_time":
        return None
    last = memo.fired.get(key or camp.id)
    if last is None or last[1] == rid:
        return None
    if camp.reentry == "once":
        return "reentry:once", f"sent at {format_ms(last[0])}"
    if last[0] > t - camp.reentry_ms:
        return "reentry:once_per", f"sent at {format_ms(last[0])}"
    return None
