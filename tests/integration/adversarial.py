"""Adversarial contact-event streams for the live-equals-replay tests.

`adversarial_stream` is deterministic (a seed gives the same lines, byte for byte) and puts
the cases where a streaming engine and a batch replay most easily disagree close together:

- one contact's `email_open` and `order_placed` in the same millisecond, with an
  `email_click` / `sms_click` / `push_open` 1 ms later;
- two events of a contact exactly 72 h apart, and 72 h - 1 ms and 72 h + 1 ms apart (the
  built-in segments' window is 72 h: `t - 72h < e <= t`);
- a consent subscribe and unsubscribe of one channel in one millisecond, in either order;
- redeliveries: an exact copy of an earlier line (same `event_id`) a few lines later;
- invalid lines (raw bytes): not JSON, a missing field, a bad `ts`;
- optionally events stamped far ahead of the wall clock (now + 20 years);
- optionally (`sequences=True`) what the built-in shop automations react to, built by
  `Sequences`: checkouts with items, paid (`checkout_id`) at, 1 ms before and 1 ms after
  the series' step instants (trigger + 3 h, + 24 h) or replaced by a newer one; orders
  with items, some paying an earlier checkout of the contact; product views, some added
  to the cart, checked out or ordered at the reminder's instant (+ 1 h); email
  subscribes and unsubscribes between and at the steps of the welcome series (+ 2 d,
  + 5 d) and of the post-purchase sequence (+ 48 h, + 7 d); birthdays (`MM-DD` and
  `YYYY-MM-DD`) in profiles with time zones from UTC-8 to UTC+13, and a change of zone
  or birthday just before (or at) the 09:00 local instant.

Lines are in event-time order (a stable sort by `ts` of a shuffled list, so the arrival
order inside one millisecond is random), except redeliveries, invalid lines and
future-stamped events, which sit anywhere. `ts` is alternately an ISO string
(`format_ms`) and epoch milliseconds. Base instants are often on a 1-hour grid so that
scenarios of one contact collide in one millisecond too.

`adversarial_cases()` is a Hypothesis strategy over the generator's parameters: the
stream itself is not drawn by Hypothesis, so a failing example prints as a few integers.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from state.timeutil import format_ms, parse_ts

__all__ = ["T0", "CAMPAIGN_T0", "WINDOW", "Sequences", "ZONES", "profile_props", "adversarial_stream", "adversarial_cases", "Case", "far_future_ms", "is_future",
           "valid_events", "invalid_lines", "future_events", "without_future", "last_ts"]

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
T0 = 1_790_000_000_000  # 2026-09-21T12:53:20Z: far behind the wall clock, only event time matters
#: 2026-03-25T00:53:20Z: the campaign streams start here, so that `--until` can be ~110 days
#: later (win-back: 90 d without an order, then 14 d) and still behind the wall clock; their
#: span holds Europe's spring-forward (03-29) and New Zealand's fall-back (04-05).
CAMPAIGN_T0 = 1_774_400_000_000
WINDOW = 72 * H  # the built-in espresso segments' window
CHANNELS = ("email", "sms", "push")
ENGAGEMENT = {"email": "email_open", "sms": "sms_click", "push": "push_open"}
FOLLOW_UPS = ("email_click", "sms_click", "push_open")
EDGE_TYPES = ("email_open", "email_click", "sms_click", "push_open", "order_placed")
ALL_TYPES = ("email_open", "email_click", "sms_click", "push_open", "order_placed", "consent_changed",
             "app_open", "product_viewed")
ALL_WEIGHTS = (5, 2, 4, 4, 1, 2, 1, 1)  # mostly engagement: orders keep contacts out for 72 h
FUTURE_YEARS = 20


def far_future_ms() -> int:
    """Now + 20 years, rounded down to the day (stable for a day, so examples reproduce)."""
    return (time.time_ns() // 1_000_000 // D) * D + FUTURE_YEARS * 365 * D


def is_future(rec: dict | bytes, horizon_ms: int | None = None) -> bool:
    """A valid-looking event stamped more than a year ahead of the wall clock."""
    if not isinstance(rec, dict):
        return False
    ts = parse_ts(rec.get("ts"))
    horizon = horizon_ms if horizon_ms is not None else time.time_ns() // 1_000_000 + 365 * D
    return ts is not None and ts > horizon


def valid_events(stream: list) -> list[dict]:
    return [r for r in stream if isinstance(r, dict) and not is_future(r)]


def invalid_lines(stream: list) -> list[bytes]:
    return [r for r in stream if isinstance(r, bytes)]


def future_events(stream: list) -> list[dict]:
    return [r for r in stream if is_future(r)]


def without_future(stream: list) -> list:
    return [r for r in stream if not is_future(r)]


def last_ts(stream: list) -> int:
    """The latest event time of the stream's valid, not future-stamped events."""
    return max(parse_ts(r["ts"]) for r in valid_events(stream))


def _props(rnd: random.Random, etype: str, n: int, checkout_ids: list[str] | None = None) -> dict:
    if etype == "order_placed":
        props = {"order_id": f"o{n}", "value": rnd.choice([9.5, 20.0, 120.0]), "currency": "EUR", "items": []}
        if checkout_ids and rnd.random() < 0.5:
            props["checkout_id"] = rnd.choice(checkout_ids)
        return props
    if etype == "consent_changed":
        return {"channel": rnd.choice(CHANNELS), "status": rnd.choice(["subscribed", "subscribed", "unsubscribed"])}
    if etype == "product_viewed":
        return {"product_id": f"p{rnd.randrange(20)}"}
    if etype == "checkout_started":
        return {"checkout_id": f"k{n}", "value": 42.0,
                "items": [{"product_id": f"p{rnd.randrange(20)}", "quantity": rnd.randint(1, 3)}]}
    return {}


def _invalid_line(rnd: random.Random, n: int, cid: str) -> bytes:
    kind = n % 5  # every kind as soon as there are five
    if kind == 0:
        return b'{"event_id": "bad-%d", "contact_id": "%s", "type": "email_op' % (n, cid.encode())  # not JSON
    if kind == 1:
        return b"\xff\xfe not json %d" % n
    if kind == 2:  # missing ts
        return b'{"event_id": "bad-%d", "contact_id": "%s", "type": "email_open"}' % (n, cid.encode())
    if kind == 3:  # missing contact_id
        return b'{"event_id": "bad-%d", "type": "order_placed", "ts": %d}' % (n, T0)
    return b'{"event_id": "bad-%d", "contact_id": "%s", "type": "email_open", "ts": "%s"}' % (  # bad ts
        n, cid.encode(), rnd.choice([b"yesterday", b"2026-13-45T00:00:00Z", b"2026-09-21T10:00:00"]))


# -- what the built-in shop automations react to ----------------------------------------------
#: Profile time zones: west to east, with half-hour offsets and southern-hemisphere DST.
ZONES = ("America/Los_Angeles", "America/New_York", "UTC", "Europe/Paris", "Asia/Kolkata", "Asia/Tokyo",
         "Pacific/Auckland")
PRODUCTS = 30
#: Offsets from a checkout to the order paying it: at, 1 ms before and after the series'
#: steps (+ 3 h, + 24 h), in between and after the series.
PAY_AFTER = (0, 1, 3 * H - 1, 3 * H, 3 * H, 3 * H + 1, 10 * H, 24 * H - 1, 24 * H, 24 * H, 24 * H + 1, 30 * H,
             3 * D)
#: Offsets from an order to an event of the contact: the post-purchase (+ 48 h, + 7 d) and
#: cross-sell (+ 2 d) step instants, 1 ms around them, and between them.
AFTER_ORDER = (H, 2 * D - 1, 2 * D, 2 * D, 2 * D + 1, 4 * D, 7 * D, 7 * D + 1)


def _price(p: int) -> float:
    return round(4.99 + 3.5 * p, 2)  # a product has one price everywhere


def _items(rnd: random.Random, must: int | None = None) -> list[dict]:
    pids = rnd.sample(range(PRODUCTS), rnd.choice((1, 1, 2, 3)))
    if must is not None and must not in pids:
        pids[rnd.randrange(len(pids))] = must
    return [{"product_id": f"p{p}", "quantity": rnd.randint(1, 3), "price": _price(p)} for p in pids]


def _value(items: list[dict]) -> float:
    return round(sum(i["price"] * i["quantity"] for i in items), 2)


def nine_am(at_ms: int, tz: str) -> tuple[str, int]:
    """("MM-DD" of the local date at `at_ms` in `tz`, 09:00 local that day in epoch ms)."""
    z = ZoneInfo(tz)
    d = datetime.fromtimestamp(at_ms / 1000, z).date()
    return f"{d.month:02d}-{d.day:02d}", int(datetime(d.year, d.month, d.day, 9, tzinfo=z).timestamp() * 1000)


def _birthday(rnd: random.Random, md: str) -> str:
    return md if rnd.random() < 0.5 else f"{rnd.randint(1950, 2008)}-{md}"


def profile_props(rnd: random.Random, cid: str, t0: int, span_ms: int) -> dict:
    """A profile of the campaign streams: addresses (5 % without email), a time zone, and
    for 40 % a birthday falling inside [t0, t0 + span_ms)."""
    tz = rnd.choice(ZONES)
    props = {"first_name": cid.title(), "phone": "+33600000000", "push_token": f"tok-{cid}", "timezone": tz}
    if rnd.random() < 0.95:
        props["email"] = f"{cid}@example.com"
    if rnd.random() < 0.4:
        props["birthday"] = _birthday(rnd, nine_am(t0 + rnd.randrange(span_ms), tz)[0])
    return props


class Sequences:
    """Scenarios of the built-in shop automations (state/builtin/campaigns-shop.yaml), one
    contact each, given to `add(ts, contact_id, type, properties)`: `scenario(cid)` draws one
    of checkout, browse, order, consent and birthday. Instants are in [t0, t0 + span_ms) but
    for follow-ups up to 7 days later. `add` may drop an event (a caller that keeps one event
    per contact and millisecond): scenarios stay valid, only the edge it made is lost."""

    KINDS = ("checkout", "checkout", "checkout", "browse", "browse", "order", "order", "consent", "birthday",
             "birthday")

    def __init__(self, rnd: random.Random, add, t0: int, span_ms: int, prefix: str = "q") -> None:
        assert span_ms > 4 * D, span_ms
        self.rnd, self.add, self.t0, self.span, self.prefix = rnd, add, t0, span_ms, prefix
        self.checkouts: dict[str, list[tuple[str, list[dict]]]] = {}
        self.n = 0

    def _id(self, kind: str) -> str:
        self.n += 1
        return f"{self.prefix}{kind}{self.n}"

    def _base(self, room: int) -> int:
        """An instant with `room` before the span's end; half of them on the hour."""
        hi = self.span - room
        if self.rnd.random() < 0.5:
            return self.t0 + self.rnd.randrange(hi // H) * H
        return self.t0 + self.rnd.randrange(hi)

    def scenario(self, cid: str, kind: str | None = None) -> None:
        getattr(self, kind or self.rnd.choice(self.KINDS))(cid)

    # -- the scenarios -------------------------------------------------------------------
    def checkout(self, cid: str) -> None:
        """A checkout-series run: paid (exit), replaced by a newer checkout, or abandoned."""
        rnd = self.rnd
        t = self._base(4 * D)
        k, items = self._checkout(cid, t)
        x = rnd.random()
        if x < 0.4:  # paid: the series exits at, just before or just after a step
            self._order(cid, t + rnd.choice(PAY_AFTER), k, items)
        elif x < 0.55:  # a newer checkout supersedes the run; either may be paid later
            t2 = t + rnd.choice((1, H, 3 * H, 10 * H, 24 * H))
            k2, items2 = self._checkout(cid, t2)
            if rnd.random() < 0.6:
                paid = rnd.choice(((k, items), (k2, items2)))
                self._order(cid, t2 + rnd.choice(PAY_AFTER), *paid)
        elif x < 0.75:  # an order paying no checkout, or an earlier one: no exit of this run
            earlier = self.checkouts[cid][:-1]
            other = rnd.choice(earlier)[0] if earlier and rnd.random() < 0.6 else None
            self._order(cid, t + rnd.choice(PAY_AFTER), other, items)
        # else abandoned: both reminders go out (caps permitting)

    def browse(self, cid: str) -> None:
        """A browse-abandonment run (+ 1 h), ended or not by the product in a cart, checkout or order."""
        rnd = self.rnd
        t = self._base(2 * D)
        p = rnd.randrange(PRODUCTS)
        self.add(t, cid, "product_viewed", {"product_id": f"p{p}", "price": _price(p),
                                            "collection_ids": [f"col{p % 4}"]})
        at = t + rnd.choice((1, 5 * 60_000, H - 1, H, H, H + 1, 3 * H))
        x = rnd.random()
        if x < 0.3:
            q = p if rnd.random() < 0.85 else (p + 1) % PRODUCTS  # sometimes another product: no exit
            self.add(at, cid, "added_to_cart", {"product_id": f"p{q}", "price": _price(q), "quantity": rnd.randint(1, 2)})
        elif x < 0.42:
            self._checkout(cid, at, must=p)
        elif x < 0.52:
            self._order(cid, at, None, _items(rnd, must=p))
        elif x < 0.67:  # viewed again (its run is open: part of it) or another product at the step instant
            q = p if rnd.random() < 0.5 else rnd.randrange(PRODUCTS)
            self.add(at, cid, "product_viewed", {"product_id": f"p{q}", "price": _price(q)})
        # else the reminder goes out (once a week at most)

    def order(self, cid: str) -> None:
        """A post-purchase and cross-sell run, with an event at or around their steps."""
        self._order(cid, self._base(D), None, _items(self.rnd), follow=1.0)

    def consent(self, cid: str) -> None:
        """Email subscribe (welcome: + 0, + 2 d, + 5 d), unsubscribed at or between its steps, back later."""
        rnd = self.rnd
        t = self._base(3 * D)
        self.add(t, cid, "consent_changed", {"channel": "email", "status": "subscribed"})
        if rnd.random() < 0.7:
            u = t + rnd.choice((H, D, 2 * D - 1, 2 * D, 2 * D, 2 * D + 1, 5 * D))
            self.add(u, cid, "consent_changed", {"channel": "email", "status": "unsubscribed"})
            if rnd.random() < 0.5:  # back again: the welcome series runs once
                self.add(u + rnd.choice((1, H, D)), cid, "consent_changed", {"channel": "email", "status": "subscribed"})

    def birthday(self, cid: str) -> None:
        """A birthday set some time before its 09:00; the zone (or the birthday) changed just
        before or at that instant; an unsubscribe or an open at it."""
        rnd = self.rnd
        tz = rnd.choice(ZONES)
        md, nine = nine_am(self._base(2 * D) + D, tz)
        tp = max(self.t0, nine - rnd.choice((1, H, 20 * H, 3 * D)))
        props = {"birthday": _birthday(rnd, md), "timezone": tz}
        if rnd.random() < 0.1:
            props["birthday"] = rnd.choice(("02-30", "13-01", "", "1990-04-31"))  # never fires
        self.add(tp, cid, "profile_updated", props)
        x = rnd.random()
        at = max(tp + 1, nine + rnd.choice((-H, -30 * 60_000, -1, 0, 0, 1)))
        if x < 0.45:  # moved just before (or at, or after) the birthday's instant in the old zone
            self.add(at, cid, "profile_updated", {"timezone": rnd.choice([z for z in ZONES if z != tz])})
        elif x < 0.6:  # the birthday itself changed: to today, to tomorrow
            day = nine_am(at + rnd.choice((0, D)), tz)[0]
            self.add(at, cid, "profile_updated", {"birthday": _birthday(rnd, day)})
        elif x < 0.75:
            self.add(at, cid, "consent_changed", {"channel": "email", "status": "unsubscribed"})
        elif x < 0.85:
            self.add(at, cid, "email_open", {})

    # -- parts ----------------------------------------------------------------------------
    def _checkout(self, cid: str, t: int, must: int | None = None) -> tuple[str, list[dict]]:
        k, items = self._id("chk"), _items(self.rnd, must)
        self.add(t, cid, "checkout_started", {"checkout_id": k, "value": _value(items), "currency": "EUR",
                                              "items": items})
        self.checkouts.setdefault(cid, []).append((k, items))
        return k, items

    def _order(self, cid: str, t: int, checkout_id: str | None, items: list[dict], follow: float = 0.3) -> None:
        rnd = self.rnd
        props: dict = {"order_id": self._id("ord"), "value": _value(items), "currency": "EUR", "items": items}
        if checkout_id is not None:
            props["checkout_id"] = checkout_id
        self.add(t, cid, "order_placed", props)
        if rnd.random() < 0.05:  # the same order again (another event id): its runs are open, no new one
            self.add(t + rnd.choice((1, 60_000)), cid, "order_placed", dict(props))
        if rnd.random() >= follow:
            return
        at = t + rnd.choice(AFTER_ORDER)
        x = rnd.random()
        if x < 0.4:  # unsubscribed between (or at) the steps: the waiting email runs end
            self.add(at, cid, "consent_changed", {"channel": "email", "status": "unsubscribed"})
            if rnd.random() < 0.5:
                self.add(at + rnd.choice((1, H, 2 * D)), cid, "consent_changed",
                         {"channel": "email", "status": "subscribed"})
        elif x < 0.65:  # another order at a step instant: new runs, re-entry of cross-sell
            self._order(cid, at, None, _items(rnd), follow=0.0)
        elif x < 0.85:
            self.add(at, cid, "email_open", {})
        else:
            self.add(at, cid, "product_viewed", {"product_id": items[0]["product_id"], "price": items[0]["price"]})


def adversarial_stream(seed: int, contacts: int, events: int, t0: int = T0, span_ms: int = 9 * D, *,
                       redeliveries: float = 0.03, invalid: float = 0.02, future: int = 0,
                       profiles: bool = False, checkouts: bool = False, sequences: bool = False) -> list[dict | bytes]:
    """About `events` lines (at least one scenario) over `contacts` contacts in [t0, t0 + span_ms).

    `redeliveries` / `invalid`: share of extra lines that are copies / invalid bytes;
    `future`: how many events stamped now + 20 years; `profiles`: a `profile_updated`
    with addresses per contact 1 s before t0 (campaigns need them); `checkouts`: also
    `checkout_started`; `sequences`: also the `Sequences` scenarios (about a third of the
    events), and profiles with birthdays and time zones of `profile_props`.
    """
    assert contacts >= 1 and span_ms > WINDOW + 2 * H, (contacts, span_ms)
    rnd = random.Random(seed)
    cids = [f"c{i:05d}" for i in range(contacts)]
    raw: list[tuple[int, str, str, dict]] = []  # (ts, contact, type, properties)
    n = 0
    checkout_ids: dict[str, list[str]] = {}

    def add(ts: int, cid: str, etype: str, props: dict | None = None) -> None:
        nonlocal n
        n += 1
        raw.append((ts, cid, etype, _props(rnd, etype, n, checkout_ids.get(cid)) if props is None else props))

    def base(room: int = 0) -> int:
        """An instant in the span (room: keep that much before its end); often on an hour."""
        hi = span_ms - room - 2
        if rnd.random() < 0.5:
            return t0 + rnd.randrange(hi // H) * H
        return t0 + rnd.randrange(hi)

    # Everyone starts subscribed to some channels, so segments have members to gain and lose.
    for cid in cids:
        for ch in rnd.sample(CHANNELS, rnd.randint(1, 3)):
            add(t0 + rnd.randrange(2 * H), cid, "consent_changed", {"channel": ch, "status": "subscribed"})

    scenarios = ["same_ms", "edge72", "flip", "random", "random", "random", "random"] + (["checkout"] if checkouts else [])
    seqs = Sequences(rnd, add, t0, span_ms) if sequences else None
    if seqs is not None:
        scenarios += ["sequence"] * 5
    while len(raw) < events:
        cid = rnd.choice(cids)
        kind = rnd.choice(scenarios)
        if kind == "same_ms":
            t = base(H)
            add(t, cid, "email_open")
            add(t, cid, "order_placed")
            for etype in rnd.sample(FOLLOW_UPS, rnd.randint(1, 3)):
                add(t + 1, cid, etype)
        elif kind == "edge72":
            t = base(WINDOW + 2)
            first, second = rnd.choice(EDGE_TYPES), rnd.choice(EDGE_TYPES)
            add(t, cid, first)
            add(t + WINDOW + rnd.choice((-1, 0, 0, 1)), cid, second)
            if rnd.random() < 0.3:  # and a third one at the other edge
                add(t + WINDOW + rnd.choice((-1, 1)), cid, rnd.choice(EDGE_TYPES))
        elif kind == "flip":
            t = base(H)
            ch = rnd.choice(CHANNELS)
            add(t, cid, "consent_changed", {"channel": ch, "status": "subscribed"})
            add(t, cid, "consent_changed", {"channel": ch, "status": "unsubscribed"})
            if rnd.random() < 0.6:  # engagement on that channel in the same ms, or 1 ms around it
                add(t + rnd.choice((-1, 0, 1)), cid, ENGAGEMENT[ch])
        elif kind == "checkout":
            t = base(H)
            add(t, cid, "checkout_started")
            checkout_ids.setdefault(cid, []).append(f"k{n}")
            if rnd.random() < 0.5:
                add(t + rnd.choice((0, 1, M - 1, M, M + 1, 3 * H)), cid, "order_placed")
        elif kind == "sequence":
            seqs.scenario(cid)  # type: ignore[union-attr]
        else:
            add(base(), cid, rnd.choices(ALL_TYPES, ALL_WEIGHTS)[0])

    rnd.shuffle(raw)
    raw.sort(key=lambda r: r[0])  # stable: the arrival order inside one millisecond stays random
    out: list[dict | bytes] = []
    if profiles and sequences:
        for i, cid in enumerate(cids):
            out.append({"event_id": f"s{seed}-p{i}", "contact_id": cid, "type": "profile_updated", "ts": t0 - S,
                        "properties": profile_props(rnd, cid, t0, span_ms)})
    elif profiles:
        for i, cid in enumerate(cids):
            out.append({"event_id": f"s{seed}-p{i}", "contact_id": cid, "type": "profile_updated",
                        "ts": t0 - S, "properties": {"first_name": cid.title(), "email": f"{cid}@example.com",
                                                     "phone": "+33600000000", "push_token": f"tok-{cid}",
                                                     "timezone": rnd.choice(["Europe/Paris", "UTC",
                                                                             "America/New_York"])}})
    for i, (ts, cid, etype, props) in enumerate(raw):
        ev = {"event_id": f"s{seed}-e{i}", "contact_id": cid, "type": etype, "ts": format_ms(ts) if i % 2 else ts}
        if props or rnd.random() < 0.5:
            ev["properties"] = props
        out.append(ev)

    # Redeliveries: the same line again 1..6 lines later (high positions first, so the
    # positions still to visit do not move and only originals are copied).
    picks = sorted(rnd.sample(range(len(out)), min(len(out), int(len(out) * redeliveries + rnd.random()))),
                   reverse=True)
    for i in picks:
        out.insert(min(len(out), i + rnd.randint(1, 6)), out[i])
    first = rnd.randrange(5)
    for k in range(first, first + int(len(out) * invalid + rnd.random())):
        out.insert(rnd.randrange(len(out) + 1), _invalid_line(rnd, k, rnd.choice(cids)))
    if future:
        far = far_future_ms()
        for k in range(future):
            ts = far + rnd.randrange(D)
            out.insert(rnd.randrange(len(out) + 1),
                       {"event_id": f"s{seed}-f{k}", "contact_id": rnd.choice(cids),
                        "type": rnd.choice(["email_open", "order_placed", "push_open", "sms_click"]),
                        "ts": format_ms(ts) if k % 2 else ts})
    return out


class Case:
    """One drawn stream; its `repr` (what Hypothesis prints for a failing example) says how to
    rebuild it with `adversarial_stream`, not its lines."""

    def __init__(self, seed: int, contacts: int, events: int, future: int) -> None:
        self.seed, self.contacts, self.events, self.future = seed, contacts, events, future
        self.stream = adversarial_stream(seed, contacts, events, future=future)

    def __repr__(self) -> str:
        return (f"adversarial_stream(seed={self.seed}, contacts={self.contacts}, events={self.events}, "
                f"future={self.future})")


def adversarial_cases(max_contacts: int = 12, per_contact: tuple[int, int] = (4, 16),
                      future: bool = True) -> st.SearchStrategy[Case]:
    """Small streams: few contacts (so their edge cases pile up), a few scenarios each per
    72 h window (more would keep everyone out of the segments with orders), and optionally
    up to two future-stamped events."""
    return st.builds(lambda seed, contacts, per, fut: Case(seed, contacts, contacts * per, fut),
                     st.integers(0, 2**32 - 1), st.integers(1, max_contacts), st.integers(*per_contact),
                     st.integers(0, 2) if future else st.just(0))
