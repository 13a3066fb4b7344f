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
- optionally events stamped far ahead of the wall clock (now + 20 years).

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

from hypothesis import strategies as st

from state.timeutil import format_ms, parse_ts

__all__ = ["T0", "WINDOW", "adversarial_stream", "adversarial_cases", "Case", "far_future_ms", "is_future",
           "valid_events", "invalid_lines", "future_events", "without_future", "last_ts"]

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
T0 = 1_790_000_000_000  # 2026-09-21T12:53:20Z: far behind the wall clock, only event time matters
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


def adversarial_stream(seed: int, contacts: int, events: int, t0: int = T0, span_ms: int = 9 * D, *,
                       redeliveries: float = 0.03, invalid: float = 0.02, future: int = 0,
                       profiles: bool = False, checkouts: bool = False) -> list[dict | bytes]:
    """About `events` lines (at least one scenario) over `contacts` contacts in [t0, t0 + span_ms).

    `redeliveries` / `invalid`: share of extra lines that are copies / invalid bytes;
    `future`: how many events stamped now + 20 years; `profiles`: a `profile_updated`
    with addresses per contact 1 s before t0 (campaigns need them); `checkouts`: also
    `checkout_started` (the built-in campaigns' abandoned-checkout segment).
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
        else:
            add(base(), cid, rnd.choices(ALL_TYPES, ALL_WEIGHTS)[0])

    rnd.shuffle(raw)
    raw.sort(key=lambda r: r[0])  # stable: the arrival order inside one millisecond stays random
    out: list[dict | bytes] = []
    if profiles:
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
