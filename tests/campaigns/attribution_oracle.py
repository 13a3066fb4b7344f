"""A brute-force reference of attribution (conversions), written without the engine.

It does not decide campaigns again: the engine's own `Message` outputs (what was released,
to whom, on which channel, when) and `held_out` decisions are taken as given (other oracles
check them). From those and the events it says which conversions the contract (SPEC
"Conversions", `state/campaigns/attribution.py`) implies, by looking at every order against
every touch, with no memory, pruning or packing.

The rules, per contact (contacts are independent):

- Events are deduplicated by `event_id` (the first delivery counts; a redelivery is nothing).
- A touch is an `email_open` / `email_click` / `sms_click` / `push_open` event of the contact
  at `s` whose `properties.message_id` is exactly the id of a message released to that same
  contact on the touch type's channel, released at `r` with `s - r <= remember` and `r < s`
  (the engine takes the touches of an instant before the steps due at it: a message
  released at `s` is not yet known to a touch at `s`; `same_ms=True` reads "released at or
  before the touch" instead). An open with `machine_open: true` (the boolean) is no touch.
- An `order_placed` of the contact at `o` goes to the touch with the latest `s` such that
  `o - W(touch type) < s <= o`, a click over an open at the same `s`, then the larger
  message id: one conversion with that message's campaign, variant and step.
- It also counts, once per campaign, for every campaign whose latest `held_out` decision for
  the contact at `h < o` (`h <= o` with `same_ms`) has `o - W(click of the campaign's
  channel) < h` (push: the push open window): a holdout conversion, step of that decision.
- The same way, once per campaign, for every campaign whose latest message released to the
  contact at `r < o` (then the larger id) has `o - W(click of its channel) < r`, touched or
  not: a `sent` conversion (intent to treat) naming that message, its variant and step.
- `order_id` and `currency` are kept when strings, `value` when a number (not a bool).
- `conversion_id` = xxh3-128 of "contact, order event id, group, campaign id or None"
  (campaign id only for holdout and sent conversions).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, NamedTuple

import xxhash

from state.campaigns.model import Campaigns
from state.events import Event

__all__ = ["Oracle", "Row", "TOUCH_TYPES", "HOLDOUT_KEY", "WINDOW_KEYS", "conversion_key"]

#: touch event type -> (channel, kind), from the SPEC
TOUCH_TYPES = {"email_open": ("email", "open"), "email_click": ("email", "click"),
               "sms_click": ("sms", "click"), "push_open": ("push", "open")}
#: the window a holdout of each channel is counted in (the channel's click; push has only opens)
HOLDOUT_KEY = {"email": "email_click", "sms": "sms_click", "push": "push_open"}
WINDOW_KEYS = (*TOUCH_TYPES, "remember")


class Row(NamedTuple):
    """A conversion in comparable terms (everything of `Conversion` but its id, then the id)."""

    contact_id: str
    order_id: str | None
    at: int
    value: object
    currency: str | None
    message_id: str | None
    campaign_id: str
    variant: str | None
    step_id: str | None
    touch: str | None
    touch_at: int | None
    group: str


def conversion_key(contact_id: str, order_event_id: str, group: str, campaign_id: str | None) -> str:
    return xxhash.xxh3_128_hexdigest(f"{contact_id}\x1f{order_event_id}\x1f{group}\x1f{campaign_id}".encode())


def _number(v: object) -> object:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class Oracle:
    """`run(events, outputs)`: the conversions as {conversion_id: Row}."""

    def __init__(self, camps: Campaigns, *, same_ms: bool = False) -> None:
        self.windows = {k: camps.attribution[k] for k in WINDOW_KEYS}
        self.channel = {c.id: c.channel for c in camps.campaigns}
        self.same_ms = same_ms

    def run(self, events: Iterable[Event], outputs: Iterable) -> dict[str, Row]:
        orders, touches, held = self.read(events, outputs)
        out: dict[str, Row] = {}
        for cid, evs in orders.items():
            for order in evs:
                for cv_id, row in self._convert(cid, order, touches.get(cid, []), held.get(cid, {})):
                    assert cv_id not in out
                    out[cv_id] = row
        return out

    def read(self, events: Iterable[Event], outputs: Iterable) -> tuple[dict, dict, dict]:
        """Per contact: its orders (first deliveries), its touches (s, is click, message id,
        window, released message (contact, channel, at, campaign, variant, step id)) and its
        held_out decisions per campaign [(at, output index, step id)]."""
        seen: set[str] = set()
        touch_events: dict[str, list[Event]] = defaultdict(list)
        orders: dict[str, list[Event]] = defaultdict(list)
        for ev in events:
            if ev.event_id in seen:
                continue
            seen.add(ev.event_id)
            if ev.type in TOUCH_TYPES:
                touch_events[ev.contact_id].append(ev)
            elif ev.type == "order_placed":
                orders[ev.contact_id].append(ev)
        released: dict[str, tuple] = {}
        held: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for i, o in enumerate(outputs):
            kind = type(o).__name__
            if kind == "Message":
                assert o.message_id not in released, f"message id {o.message_id} released twice"
                released[o.message_id] = (o.contact_id, o.channel, o.due_at, o.campaign_id, o.variant, o.step_id)
            elif kind == "Decision" and o.outcome == "held_out":
                held[o.contact_id][o.campaign_id].append((o.at, i, o.step_id))
        self._released = released  # message id -> (contact, channel, at, campaign, variant, step id)
        touches = {cid: [t for t in (self._touch(cid, ev, released) for ev in evs) if t is not None]
                   for cid, evs in touch_events.items()}
        return orders, touches, held

    def _touch(self, cid: str, ev: Event, released: dict) -> tuple | None:
        """(s, is click, message id, window, released message) or None when it is no touch."""
        channel, kind = TOUCH_TYPES[ev.type]
        props = ev.properties
        mid = props.get("message_id")
        if kind == "open" and props.get("machine_open") is True:
            return None
        m = released.get(mid) if isinstance(mid, str) else None
        if m is None or m[0] != cid or m[1] != channel:
            return None
        s, r = ev.ts, m[2]
        if (r > s if self.same_ms else r >= s) or s - r > self.windows["remember"]:
            return None
        return (s, kind == "click", mid, self.windows[ev.type], m)

    def _convert(self, cid: str, order: Event, touches: list, held: dict) -> list[tuple[str, Row]]:
        o = order.ts
        props = order.properties
        order_id = props.get("order_id") if isinstance(props.get("order_id"), str) else None
        currency = props.get("currency") if isinstance(props.get("currency"), str) else None
        value = _number(props.get("value"))
        out = []
        inside = [t for t in touches if o - t[3] < t[0] <= o]
        if inside:
            s, click, mid, _, m = max(inside, key=lambda t: (t[0], t[1], t[2]))
            out.append((conversion_key(cid, order.event_id, "message", None),
                        Row(cid, order_id, o, value, currency, mid, m[3], m[4], m[5],
                            "click" if click else "open", s, "message")))
        sent: dict[str, tuple] = {}  # campaign -> (released at, message id, released message)
        for mid, m in self._released.items():
            if m[0] != cid or not (m[2] <= o if self.same_ms else m[2] < o):
                continue
            if o - self.windows[HOLDOUT_KEY[m[1]]] < m[2] and (m[3] not in sent or (m[2], mid) > sent[m[3]][:2]):
                sent[m[3]] = (m[2], mid, m)
        for camp, (_, mid, m) in sorted(sent.items()):
            out.append((conversion_key(cid, order.event_id, "sent", camp),
                        Row(cid, order_id, o, value, currency, mid, camp, m[4], m[5], None, None, "sent")))
        for camp, decisions in sorted(held.items()):
            before = [d for d in decisions if (d[0] <= o if self.same_ms else d[0] < o)]
            if not before:
                continue
            h, _, step_id = max(before)  # the latest; at one instant, the last decided
            if o - self.windows[HOLDOUT_KEY[self.channel[camp]]] < h:
                out.append((conversion_key(cid, order.event_id, "holdout", camp),
                            Row(cid, order_id, o, value, currency, None, camp, None, step_id, None, None,
                                "holdout")))
        return out
