"""Conversions: each order attributed to the message last touched before it, in event time.

Per contact, next to its runs: the messages released to it (for `remember`, default 30 d,
keyed by their id as a number), the touches of those messages inside the longest
window, and the latest holdout decision per campaign. An order at `o` goes to the touch
with the latest time `s` such that `o - window(touch) < s <= o` (a click wins over an open
of the same millisecond, then the larger message id); it also counts, once per campaign,
for every campaign that held the contact out within that channel's click window before
`o` — and, the same way, for every campaign that *sent* the contact a message in that window
(`group` "sent", touched or not: the intent-to-treat count that holdouts are compared
with). A touch naming a message this contact was not sent (unknown, another contact's, too
old, another channel's) or an open a privacy proxy made (`machine_open: true`) is no
touch: counted in the engine's stats, never attributed.
"""

from __future__ import annotations

import re

from ..events import Event
from .model import HOLDOUT_WINDOW_OF, ORDER_TYPE, TOUCHES
from .policies import Memo
from .records import Conversion, conversion_id

__all__ = ["Attribution", "message_key"]

_HEX32 = re.compile(r"[0-9a-f]{32}")


def message_key(mid: object) -> int | None:
    """A message id (32 hex digits) as its 128-bit number, or None if it is not one of ours."""
    if not isinstance(mid, str) or not _HEX32.fullmatch(mid):
        return None  # ours are 32 lower-case hex digits: anything else names no message of ours
    return int(mid, 16)


class Attribution:
    """Part of `CampaignEngine`: remembers releases, touches and holdouts; converts orders."""

    #: Accepted touches per (campaign index, step index, variant index, "open" | "click"),
    #: counted only when an observer sets a dict here (the live flow's metrics; it drains it).
    touch_counts: dict | None = None

    def _released(self, memo: Memo, k: int, step: int, variant: int, mid: str, t: int) -> None:
        key = message_key(mid)
        if key is None:
            return
        if memo.released is None:
            memo.released = {}
        memo.released[key] = (t << 32) | (k << 16) | (step << 8) | variant

    def _held_out(self, memo: Memo, k: int, step: int, t: int) -> None:
        if memo.held is None:
            memo.held = {}
        memo.held[k] = (t, step)

    def _attribute(self, cid: str, t: int, evs: list[Event], memo: Memo, out: list) -> None:
        """The touches of this instant, then its orders (a touch at `t` counts for an order at `t`)."""
        orders = []
        for ev in evs:
            etype = ev[2]
            if etype in TOUCHES:
                self._on_touch(ev, t, memo)
            elif etype == ORDER_TYPE:
                orders.append(ev)
        for ev in orders:
            if memo.touches or memo.held or memo.released:
                self._on_order(cid, ev, t, memo, out)

    def _on_touch(self, ev: Event, t: int, memo: Memo) -> None:
        props = ev[4]
        mid = props.get("message_id")
        if mid is None:
            return  # engagement with something else (the shop's own newsletter): not a touch
        channel, kind = TOUCHES[ev[2]]
        if kind == "open" and props.get("machine_open") is True:
            self.stats["touches_machine"] = self.stats.get("touches_machine", 0) + 1
            return
        key = message_key(mid)
        packed = None if key is None or memo.released is None else memo.released.get(key)
        windows = self._windows
        if packed is None or self.camps[(packed >> 16) & 0xFFFF].channel != channel \
                or t - (packed >> 32) > windows["remember"] or (packed >> 32) > t:
            self.stats["touches_unknown"] = self.stats.get("touches_unknown", 0) + 1
            return
        if memo.touches is None:
            memo.touches = []
        memo.touches.append((t, kind == "click", mid, windows[ev[2]], packed))
        counts = self.touch_counts
        if counts is not None:
            key = ((packed >> 16) & 0xFFFF, (packed >> 8) & 0xFF, packed & 0xFF, kind)
            counts[key] = counts.get(key, 0) + 1

    def _on_order(self, cid: str, ev: Event, t: int, memo: Memo, out: list) -> None:
        props = ev[4]
        order_id = props.get("order_id")
        order_id = order_id if isinstance(order_id, str) else None
        value = props.get("value")
        value = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        currency = props.get("currency")
        currency = currency if isinstance(currency, str) else None
        best = None
        for touch in memo.touches or ():
            s, click, mid = touch[0], touch[1], touch[2]
            if t - touch[3] < s <= t and (best is None or (s, click, mid) > (best[0], best[1], best[2])):
                best = touch
        if best is not None:
            packed = best[4]
            k, step, variant = (packed >> 16) & 0xFFFF, (packed >> 8) & 0xFF, packed & 0xFF
            c = self.camps[k]
            st = c.steps[step]
            out.append(Conversion(conversion_id(cid, ev[0], "message", None), order_id, cid, t, value, currency,
                                  best[2], c.id, (st.variants[variant].name or None) if variant < len(st.variants) else None, st.id or None,
                                  "click" if best[1] else "open", best[0]))
            self.stats["converted"] = self.stats.get("converted", 0) + 1
        if memo.released:
            # Intent to treat, the twin of a holdout conversion: per campaign, its latest message
            # released within the channel's click window before the order, touched or not.
            latest: dict[int, tuple[int, int, int]] = {}
            for key, packed in memo.released.items():
                k, rel = (packed >> 16) & 0xFFFF, packed >> 32
                if t - self._windows[HOLDOUT_WINDOW_OF[self.camps[k].channel]] < rel <= t \
                        and (k not in latest or (rel, key) > latest[k][:2]):
                    latest[k] = (rel, key, packed)
            for k in sorted(latest, key=lambda k: self._rank[k]):
                rel, key, packed = latest[k]
                c = self.camps[k]
                st = c.steps[(packed >> 8) & 0xFF]
                variant = packed & 0xFF
                out.append(Conversion(conversion_id(cid, ev[0], "sent", c.id), order_id, cid, t, value, currency,
                                      f"{key:032x}", c.id,
                                      (st.variants[variant].name or None) if variant < len(st.variants) else None,
                                      st.id or None, None, None, "sent"))
        for k, (held_at, step) in sorted((memo.held or {}).items(), key=lambda kv: self._rank[kv[0]]):
            c = self.camps[k]
            if t - self._windows[HOLDOUT_WINDOW_OF[c.channel]] < held_at <= t:
                out.append(Conversion(conversion_id(cid, ev[0], "holdout", c.id), order_id, cid, t, value, currency,
                                      None, c.id, None, c.steps[step].id or None, None, None, "holdout"))

    def _prune_attribution(self, memo: Memo, t: int) -> int:
        """Forget what no order can use from `t` on; the instant the rest may be forgotten."""
        windows = self._windows
        until = -1
        if memo.released:
            low = t - windows["remember"]
            memo.released = {k: v for k, v in memo.released.items() if (v >> 32) > low} or None
            if memo.released:
                until = max(v >> 32 for v in memo.released.values()) + windows["remember"]
        if memo.touches:
            memo.touches = [x for x in memo.touches if x[0] > t - x[3]] or None
            if memo.touches:
                until = max(until, max(x[0] + x[3] for x in memo.touches))
        if memo.held:
            keep = {}
            for k, (held_at, step) in memo.held.items():
                w = windows[HOLDOUT_WINDOW_OF[self.camps[k].channel]]
                if held_at > t - w:
                    keep[k] = (held_at, step)
                    until = max(until, held_at + w)
            memo.held = keep or None
        return until

    def _restore_attribution(self, memo: Memo, saved: tuple, remap: dict) -> None:
        """A snapshot's releases, touches and holdouts, with campaigns renumbered by id
        (those no longer defined, or steps beyond their last, are dropped)."""
        released, touches, held = saved

        def fix(packed: int) -> int | None:
            k = remap.get((packed >> 16) & 0xFFFF)
            if k is None or ((packed >> 8) & 0xFF) >= len(self.camps[k].steps):
                return None
            return (packed & ~(0xFFFF << 16)) | (k << 16)

        if released:
            memo.released = {key: p for key, p in ((key, fix(v)) for key, v in released.items()) if p is not None} or None
        if touches:
            memo.touches = [x[:4] + (p,) for x, p in ((x, fix(x[4])) for x in touches) if p is not None] or None
        if held:
            memo.held = {remap[k]: v for k, v in held.items()
                         if remap.get(k) is not None and v[1] < len(self.camps[remap[k]].steps)} or None
