"""Catalog triggers through a real Shard + CampaignEngine, against a brute-force oracle.

`catalog_oracle.CatalogOracle` scans, for each update, every event before it. Streams are
built so the edges happen often: prices whose drop is exactly 10 % (20.00 -> 18.00,
0.30 -> 0.27) or exactly the amount (25 -> 20), views without a price, inventories
crossing 0 and `below`, updates omitting a field, events at an exact window edge of an
earlier one (30 d, 7 d, 2 d, +-1 ms), views, orders and consents in the same millisecond
as an update, redelivered updates and contact events. Every stream also goes through random batch cuts and
snapshot/restore points: the engine must not notice.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.campaigns import Conversion, Message
from state.catalog import catalog_event
from state.events import Event

from .catalog_oracle import FIELDS, CatalogOracle, render, template
from .helpers import D, H, T0, campaigns
from .helpers import run as run_all
from .test_sequences import by_contact, check_order

STOCK_FIELDS = tuple(f for f in FIELDS if f != "previous_price")
DROP_BODY, STOCK_BODY = template(FIELDS), template(STOCK_FIELDS)

CATALOG = f"""
default_timezone: UTC
caps: {{email: null, all: null}}
campaigns:
  - id: drop
    trigger: {{catalog: price_drop, min_drop: 10%, viewed_within: 30d}}
    reentry: every_time
    max_runs: 10
    channel: email
    quiet_hours: null
    steps:
      - {{id: now, after: 0s, template: {{subject: s, body: "{DROP_BODY}"}}}}
  - id: drop-amount
    trigger: {{catalog: price_drop, min_drop: 5, viewed_within: 2d}}
    reentry: {{once_per: 7d}}
    max_runs: 1
    channel: email
    priority: 3
    quiet_hours: null
    steps:
      - {{id: now, after: 0s, template: {{subject: s, body: "{DROP_BODY}"}}}}
      - {{id: later, after: 1d, template: {{subject: s, body: "{DROP_BODY}"}}}}
  - id: back
    trigger: {{catalog: back_in_stock}}
    reentry: once
    max_runs: 5
    channel: email
    quiet_hours: null
    steps:
      - {{id: now, after: 0s, template: {{subject: s, body: "{STOCK_BODY}"}}}}
  - id: low
    trigger: {{catalog: low_stock, below: 5, carted_within: 7d}}
    reentry: every_time
    max_runs: 2
    channel: email
    quiet_hours: null
    steps:
      - {{id: now, after: 0s, template: {{subject: s, body: "{STOCK_BODY}"}}}}
      - {{id: later, after: 2h, template: {{subject: s, body: "{STOCK_BODY}"}}}}
"""
CAMPS = campaigns(CATALOG, file="catalog.yaml")
FIELDS_OF = {"drop": FIELDS, "drop-amount": FIELDS, "back": STOCK_FIELDS, "low": STOCK_FIELDS}

# exact 10 % drops (20.00 -> 18.00, 0.30 -> 0.27, "20.00" -> "18.00"), near misses, an exact 5
# (25 -> 20.0), and an int and a float of equal value (20 and 20.0), which render differently.
PRICES = [20.0, 20, 18.0, 18.01, 17.99, 25, 30, 0.3, 0.27, 0.28, "20.00", "18.00", 19.99, 9.5]
# sold out, low (below 5: 1-4) and plenty (5 or more)
INVENTORIES = [[0], [1, 3, 4], [5, 6, 10]]
WINDOWS = [30 * D, 7 * D, 2 * D, D]
OFFSETS = [0, 0, 0, 1, -1, H] + [w + d for w in WINDOWS for d in (-1, 0, 1)]
PRODUCTS = ["p1", "p2"]
TYPES = ["update"] * 6 + ["product_viewed"] * 3 + ["added_to_cart"] * 4 + ["order_placed"] * 2 + [
    "consent_changed", "profile_updated"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(*args, **kwargs):
    """`helpers.run` without conversions (orders after sends make them; not looked at here)."""
    changes, out = run_all(*args, **kwargs)
    return changes, [o for o in out if not isinstance(o, Conversion)]


STOCK_TYPES = ["update"] * 6 + ["added_to_cart"] * 4 + ["product_viewed", "order_placed"]


@st.composite
def streams(draw, products: tuple[str, ...] = tuple(PRODUCTS), types: tuple[str, ...] = tuple(TYPES)):
    """(events in merged order with a few redeliveries, until, batch cuts, restore points)."""
    contacts = ["a", "b", "c"][:draw(st.integers(1, 3))]
    grid = draw(st.sampled_from([12 * H, H, 6 * H]))  # dense streams make re-entry and low stock likely
    events: list[Event] = []
    pick = lambda xs: draw(st.sampled_from(xs))  # noqa: E731

    def add(cid: str, etype: str, ts: int, props: dict) -> None:
        if etype == "update":
            events.append(catalog_event(f"u{len(events)}", props.pop("product_id"), ts, props))
        else:
            events.append(Event(f"e{len(events)}", cid, etype, ts, props))

    def update(pid: str) -> dict:
        props: dict = {"product_id": pid}
        what = pick(["both", "price", "inventory"])
        if what != "inventory":
            props["price"] = pick(PRICES)
        if what != "price":
            props["inventory"] = pick(pick(INVENTORIES))
        if draw(st.integers(0, 2)) == 0:
            props["title"] = pick(["Mug", "Cup"])
        return props

    for pid in products:  # most products have a first update early
        if draw(st.integers(0, 3)):
            add("", "update", T0 - 40 * D + draw(st.integers(0, 3)) * H, update(pid))
    for cid in contacts:  # most contacts start subscribed with an address
        if draw(st.integers(0, 4)):
            at = T0 - 40 * D + draw(st.sampled_from([0, H]))
            add(cid, "profile_updated", at, {"email": f"{cid}@example.com"})
            add(cid, "consent_changed", at, {"channel": "email", "status": "subscribed"})
    for _ in range(draw(st.integers(1, 28))):
        etype = pick(types)
        looks = [e for e in events if e[2] in ("product_viewed", "added_to_cart")]
        if etype == "update" and looks and draw(st.integers(0, 2)):  # at a window edge of a view or cart
            ts = pick(looks)[3] + pick(OFFSETS[:6] + OFFSETS[6::3] + OFFSETS[7::3])
        elif events and draw(st.integers(0, 2)):  # at an exact window edge of an earlier event
            ts = pick(events)[3] + pick(OFFSETS)
        else:
            ts = T0 + draw(st.integers(-40, 40)) * grid
        cid = pick(contacts)
        if etype == "update":
            props = update(pick(products))
        elif etype in ("product_viewed", "added_to_cart"):
            props = {"product_id": pick(products)}
            if draw(st.integers(0, 3)):
                props["price"] = pick(PRICES)
        elif etype == "order_placed":
            props = {"order_id": f"o{len(events)}",
                     "items": [{"product_id": p} for p in draw(st.lists(st.sampled_from(products), max_size=2))]}
        elif etype == "consent_changed":
            props = {"channel": "email", "status": pick(["subscribed", "subscribed", "unsubscribed"])}
        else:
            props = {"email": pick([f"{cid}@example.com", f"{cid}@example.com", ""])}
        add(cid, etype, ts, props)
    # the merged order: event time, contact events before the updates of their millisecond
    events.sort(key=lambda e: (e[3], e[1] == ""))
    updates = [i for i, e in enumerate(events) if e[1] == ""]
    for _ in range(draw(st.integers(0, 2)) if updates else 0):  # redelivered updates, later on
        i = pick(updates)
        events.insert(draw(st.integers(i + 1, len(events))), events[i])
    for _ in range(draw(st.integers(0, 2))):  # redelivered contact events, later on
        i = draw(st.integers(0, len(events) - 1))
        if events[i][1]:
            events.insert(draw(st.integers(i + 1, len(events))), events[i])
    until = max(e[3] for e in events) + pick([0, 1, H, D, 3 * D])
    n = len(events)
    cuts = draw(st.lists(st.integers(1, n), max_size=6))
    restores = draw(st.lists(st.integers(1, n), max_size=3)) if n > 1 else []
    return events, until, cuts, restores


def rows(out: list) -> tuple[list, list]:
    """The engine's outputs in the oracle's terms; messages with their rendered body."""
    msgs, decs = [], []
    for o in out:
        if isinstance(o, Message):
            msgs.append((o.contact_id, o.campaign_id, o.step_id, o.run_id, o.due_at, o.body))
        else:
            decs.append((o.contact_id, o.campaign_id, o.step_id, o.run_id, o.outcome, o.reason, o.at, o.due_at))
    return msgs, decs


def expected(events: list[Event], until: int) -> tuple[list, list]:
    msgs, decs, trig = CatalogOracle(CAMPS).run(events, until)
    msgs = [(*m, render(trig[m[3]].product, FIELDS_OF[m[1]])) for m in msgs]
    return msgs, decs


def assert_same(engine: tuple[list, list], oracle: tuple[list, list], label: str) -> None:
    assert by_contact(engine[0]) == by_contact(oracle[0]), f"{label}: messages differ from the oracle"
    assert by_contact(engine[1]) == by_contact(oracle[1]), f"{label}: decisions differ from the oracle"


@PROPERTY
@given(streams())
def test_catalog_runs_equal_oracle(case):
    """Messages (with their product) and decisions equal the oracle, whatever the batches and restores."""
    events, until, cuts, restores = case
    want = expected(events, until)
    _, whole = run(CAMPS, events, until)
    check_order(whole)
    assert_same(rows(whole), want, "one batch")
    _, cut = run(CAMPS, events, until, cuts, restore_at=restores)
    check_order(cut)
    assert_same(rows(cut), want, f"cuts {sorted(cuts)}, restores {sorted(restores)}")
    assert Counter(o.record()["message_id"] for o in cut) == Counter(o.record()["message_id"] for o in whole)


@settings(PROPERTY, max_examples=60)
@given(streams())
def test_every_event_alone_equals_oracle(case):
    """One event per batch, a restore after every other batch: still the oracle's outputs."""
    events, until, _, _ = case
    n = len(events)
    _, out = run(CAMPS, events, until, range(1, n), restore_at=range(2, n, 2))
    check_order(out)
    assert_same(rows(out), expected(events, until), "event by event")


@settings(PROPERTY, max_examples=100)
@given(streams(products=("p1",), types=tuple(STOCK_TYPES)))
def test_stock_runs_equal_oracle(case):
    """One product, mostly carts and stock updates: low stock and back in stock often, same oracle."""
    events, until, cuts, restores = case
    want = expected(events, until)
    _, out = run(CAMPS, events, until, cuts, restore_at=restores)
    check_order(out)
    assert_same(rows(out), want, f"cuts {sorted(cuts)}, restores {sorted(restores)}")
