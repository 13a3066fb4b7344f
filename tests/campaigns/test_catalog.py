"""Catalog triggers, one edge at a time (SPEC "Catalog triggers", issue 14).

Every case goes through a real Shard + CampaignEngine twice (one batch; one event per
batch with a snapshot/restore between every two) and, when it is in the oracle's scope,
is checked against `catalog_oracle.CatalogOracle` too. Then the exact outcome is pinned.
Events are given in the merged order the flow's `Aligner` releases: event time, contact
events before the updates of their millisecond.
"""

from __future__ import annotations

import textwrap

import orjson
import pytest

from state.campaigns import Conversion, Message
from state.catalog import MAX_PRODUCTS_PER_CONTACT, catalog_event, parse_catalog_event
from state.errors import DefinitionError
from state.events import Event, Invalid

from .catalog_oracle import FIELDS, CatalogOracle, render, template
from .helpers import D, H, T0, campaigns
from .helpers import run as run_all

T = T0
BODY = template(FIELDS)
_n = [0]


def camps(trigger: str, *, reentry: str = "every_time", steps: tuple[str, ...] = ("0s",), max_runs: int = 10,
          body: str = BODY, extra: str = ""):
    step_lines = "\n".join(f"      - {{id: s{i}, after: {a}, template: {{subject: s, body: \"{body}\"}}}}"
                           for i, a in enumerate(steps))
    text = f"""
default_timezone: UTC
caps: {{email: null, all: null}}
campaigns:
  - id: cat
    trigger: {trigger}
    reentry: {reentry}
    max_runs: {max_runs}
    channel: email
    quiet_hours: null
    steps:
{step_lines}
{extra}"""
    return campaigns(text, file="catalog.yaml")


DROP = camps("{catalog: price_drop, min_drop: 10%, viewed_within: 30d}")
DROP5 = camps("{catalog: price_drop, min_drop: 5, viewed_within: 30d}")
BACK = camps("{catalog: back_in_stock, viewed_within: 30d}")
LOW = camps("{catalog: low_stock, below: 5, carted_within: 7d}")


def ev(cid: str, etype: str, ts: int, **props) -> Event:
    _n[0] += 1
    return Event(f"x{_n[0]}", cid, etype, ts, props)


def upd(pid: str, ts: int, eid: str | None = None, **props) -> Event:
    _n[0] += 1
    return catalog_event(eid or f"u{_n[0]}", pid, ts, props)


def view(cid: str, ts: int, pid: str = "p1", **props) -> Event:
    return ev(cid, "product_viewed", ts, product_id=pid, **props)


def cart(cid: str, ts: int, pid: str = "p1", **props) -> Event:
    return ev(cid, "added_to_cart", ts, product_id=pid, **props)


def order(cid: str, ts: int, *pids: str) -> Event:
    return ev(cid, "order_placed", ts, order_id=f"o{_n[0]}", items=[{"product_id": p} for p in pids])


def ready(cid: str = "a", ts: int = T - 60 * D) -> list[Event]:
    return [ev(cid, "profile_updated", ts, email=f"{cid}@example.com"),
            ev(cid, "consent_changed", ts, channel="email", status="subscribed")]


def run(c, events: list[Event], until: int, cuts=(), restore_at=()) -> list:
    _, out = run_all(c, events, until, cuts, restore_at=restore_at)
    return [o for o in out if not isinstance(o, Conversion)]


def rows(out: list) -> list[tuple]:
    got = []
    for o in out:
        if isinstance(o, Message):
            got.append((o.contact_id, o.step_id, "sent", o.body, o.due_at))
        else:
            got.append((o.contact_id, o.step_id, o.outcome, o.reason, o.at))
    return sorted(got, key=lambda g: (g[4], g))


def outcome(c, events: list[Event], until: int | None = None, oracle: bool = True) -> list[tuple]:
    """(contact, step, outcome, body or reason, at) of the engine, the same event by event with
    restores, and (`oracle`) the same as the brute-force oracle's."""
    until = max(e.ts for e in events) + 2 * D if until is None else until
    whole = rows(run(c, events, until))
    n = len(events)
    assert rows(run(c, events, until, range(1, n), restore_at=range(2, n, 2))) == whole, "event by event"
    if oracle:
        msgs, decs, trig = CatalogOracle(c).run(events, until)
        want = [(m[0], m[2], "sent", render(trig[m[3]].product), m[4]) for m in msgs]
        want += [(d[0], d[2], d[4], d[5], d[6]) for d in decs]
        assert whole == sorted(want, key=lambda g: (g[4], g)), "oracle"
    return whole


def sent(c, events: list[Event], until: int | None = None, oracle: bool = True) -> list[tuple]:
    """(contact, body, at) of the messages sent."""
    return [(g[0], g[3], g[4]) for g in outcome(c, events, until, oracle) if g[2] == "sent"]


# -- price drop ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "fires"), [
    (20.00, 18.00, True), (0.30, 0.27, True), ("20.00", "18.00", True), (20.00, 18.01, False),
    (20.00, 17.99, True), (0.30, 0.28, False), (100, 90, True), (100, 90.01, False)])
def test_a_drop_of_exactly_min_drop_qualifies(old, new, fires):
    """10 % compared in exact decimals (in floating point 20.00 -> 18.00 is 9.999...%)."""
    evs = ready() + [upd("p1", T - 2 * D, price=old), view("a", T - D, price=old), upd("p1", T, price=new)]
    assert sent(DROP, evs) == ([("a", f"p1|{new}|{old}|-|-|-", T)] if fires else [])


@pytest.mark.parametrize(("new", "fires"), [(20, True), (20.0, True), (19.99, True), (20.01, False), ("20.00", True)])
def test_a_drop_of_exactly_the_amount_qualifies(new, fires):
    evs = ready() + [upd("p1", T - 2 * D, price=25), view("a", T - D, price=25), upd("p1", T, price=new)]
    assert bool(sent(DROP5, evs)) is fires


def test_the_drop_is_measured_from_the_price_the_contact_saw():
    """The catalogue drops 20 -> 19 (5 %) but `a` saw 25 (a -24 %), `b` saw 20: only `a`."""
    evs = ready("a") + ready("b") + [upd("p1", T - 2 * D, price=20.0), view("a", T - D, price=25),
                                      view("b", T - D, price=20.0), upd("p1", T, price=19.0)]
    assert sent(DROP, evs) == [("a", "p1|19.0|25|-|-|-", T)]


def test_only_a_lower_price_fires_even_for_a_contact_who_saw_more():
    """The update must lower the product's price: 15 -> 16 is no price drop, though `a` saw 25."""
    evs = ready() + [upd("p1", T - 2 * D, price=15), view("a", T - D, price=25), upd("p1", T, price=16)]
    assert sent(DROP, evs) == []


def test_the_latest_view_or_cart_sets_the_seen_price():
    """`a` viewed at 30 then carted at 20: a drop to 19 is 5 % of what it saw last, not enough."""
    evs = ready() + [upd("p1", T - 3 * D, price=30), view("a", T - 2 * D, price=30), cart("a", T - D, price=20.0),
                     upd("p1", T, price=19.0)]
    assert sent(DROP, evs) == []
    evs = ready() + [upd("p1", T - 3 * D, price=30), cart("a", T - 2 * D, price=20.0), view("a", T - D, price=30),
                     upd("p1", T, price=19.0)]
    assert sent(DROP, evs) == [("a", "p1|19.0|30|-|-|-", T)]


def test_a_view_without_a_price_saw_the_catalogue_price_of_its_instant():
    """The catalogue said 20 at the view (an update at the view's own millisecond comes after it),
    so 18 is exactly 10 % below what `a` saw, though the price just before the drop was 19."""
    evs = ready() + [upd("p1", T - 3 * D, price=20.0), view("a", T - D), upd("p1", T - D, price=19.0),
                     upd("p1", T, price=18.0)]
    assert sent(DROP, evs) == [("a", "p1|18.0|20.0|-|-|-", T)]


def test_a_view_without_a_price_before_any_catalogue_price_never_qualifies_for_a_drop():
    evs = ready() + [view("a", T - D), upd("p1", T - D + 1, inventory=3), upd("p1", T - H, price=20.0),
                     upd("p1", T, price=10.0)]
    assert sent(DROP, evs) == []


def test_a_product_first_update_fires_nothing():
    evs = ready() + [view("a", T - D, price=20.0), upd("p1", T, price=10.0, inventory=3)]
    assert outcome(DROP, evs) == [] and outcome(BACK, evs) == []


@pytest.mark.parametrize(("seen", "fires"), [(T - 30 * D, False), (T - 30 * D + 1, True), (T - H, True), (T, True),
                                             (T + 1, False)])
def test_the_window_edges(seen, fires):
    """`t - 30d < seen <= t`: exactly 30 days before is out, 30 d - 1 ms in, the same ms in, after out."""
    evs = ready() + [upd("p1", T - 40 * D, price=20.0), view("a", seen, price=20.0), upd("p1", T, price=18.0)]
    evs.sort(key=lambda e: (e.ts, e.contact_id == ""))
    assert bool(sent(DROP, evs)) is fires


def test_a_view_in_the_update_millisecond_counts():
    """Given after the update in the input, the view still comes first (the Aligner's order)."""
    evs = ready() + [upd("p1", T - D, price=20.0), view("a", T, price=20.0), upd("p1", T, price=18.0)]
    assert sent(DROP, evs) == [("a", "p1|18.0|20.0|-|-|-", T)]


# -- orders --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("at", "excluded"), [(T - D - 1, False), (T - D, True), (T - H, True), (T, True),
                                              (T + 1, False)])
def test_an_order_of_the_product_at_or_after_the_view_excludes(at, excluded):
    """An order between the view (T - 1d) and the update (T), at either end included; an order
    after the update is too late to matter; one before the view is an older purchase."""
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), view("a", T - D, price=20.0), order("a", at, "p1"),
                     upd("p1", T, price=18.0)]
    evs.sort(key=lambda e: (e.ts, e.contact_id == ""))
    assert bool(sent(DROP, evs)) is not excluded


def test_an_order_of_another_product_does_not_exclude():
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), view("a", T - D, price=20.0), order("a", T - H, "p2", "p3"),
                     upd("p1", T, price=18.0)]
    assert len(sent(DROP, evs)) == 1


def test_a_view_after_the_order_qualifies_again():
    evs = ready() + [upd("p1", T - 3 * D, price=20.0), view("a", T - 2 * D, price=20.0), order("a", T - D, "p1"),
                     view("a", T - H, price=20.0), upd("p1", T, price=18.0)]
    assert len(sent(DROP, evs)) == 1


@pytest.mark.parametrize("view_first", [True, False])
@pytest.mark.parametrize("earlier_view", [True, False])
def test_an_order_in_the_view_millisecond_excludes_whatever_their_arrival_order(view_first, earlier_view):
    """`ts >= seen_ts`: an order in the view's millisecond excludes, given after or before it,
    whether or not the contact had viewed the product before."""
    v, o = view("a", T - D, price=20.0), order("a", T - D, "p1")
    evs = ready() + [upd("p1", T - 2 * D, price=20.0)] + ([view("a", T - 2 * D, price=20.0)] if earlier_view else [])
    evs += [*((v, o) if view_first else (o, v)), upd("p1", T, price=18.0)]
    assert sent(DROP, evs) == []


# -- back in stock -------------------------------------------------------------------------------

@pytest.mark.parametrize(("inventories", "fires"), [
    ((0, 3), [1]), ((0, 0), []), ((0, 0, 1), [2]), ((2, 3), []), ((3, 0, 5), [2]), ((0, None, 2), [2]),
    ((None, 0, 4), [2]), ((1, 0, 1, 0, 1), [2, 4])])
def test_back_in_stock(inventories, fires):
    """0 -> above 0 fires; 0 -> 0 does not; an update without inventory keeps it (None: price only)."""
    evs = ready() + [view("a", T - 10 * D)]
    for i, inv in enumerate(inventories):
        props = {"price": 10 + i} if inv is None else {"inventory": inv}
        evs.append(upd("p1", T + i * H, **props))
    assert [at for _, _, at in sent(BACK, evs)] == [T + i * H for i in fires]


def test_back_in_stock_needs_a_view_or_cart_within_the_window():
    evs = ready("a") + ready("b") + ready("c") + [
        upd("p1", T - 40 * D, inventory=0), view("a", T - 30 * D), cart("b", T - 30 * D + 1), view("c", T - D, pid="p2"),
        upd("p1", T, inventory=2)]
    assert [cid for cid, _, _ in sent(BACK, evs)] == ["b"]


# -- low stock ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("inventories", "fires"), [
    ((5, 4), [1]), ((10, 1), [1]), ((4, 3), []), ((6, 0), []), ((5, 5), []), ((0, 2), []),
    ((6, None, 2), [2]), ((9, 4, 9, 3), [1, 3])])
def test_low_stock(inventories, fires):
    """From `>= below` (5) to 1..4: a sell-out is not low stock; below already is not a new low."""
    evs = ready() + [cart("a", T - D)]
    for i, inv in enumerate(inventories):
        props = {"price": 10 + i} if inv is None else {"inventory": inv}
        evs.append(upd("p1", T + i * H, **props))
    assert [at for _, _, at in sent(LOW, evs)] == [T + i * H for i in fires]


def test_low_stock_needs_a_cart_not_a_view_within_carted_within():
    evs = ready("a") + ready("b") + ready("c") + ready("d") + [
        upd("p1", T - 10 * D, inventory=8), cart("a", T - 7 * D), cart("b", T - 7 * D + 1), view("c", T - H),
        cart("d", T - 2 * D), view("d", T - H), order("d", T - D, "p1"), upd("p1", T, inventory=2)]
    # d's cart is older than its order (the view after the order is no cart)
    assert [cid for cid, _, _ in sent(LOW, evs)] == ["b"]


# -- runs, policies, the product in the message --------------------------------------------------

def test_the_message_shows_the_product_of_the_catalogue():
    evs = ready() + [upd("p1", T - 2 * D, price=20.0, inventory=4, title="Mug", url="https://shop/mug"),
                     view("a", T - D, price=20.0), upd("p1", T, price=15.0)]
    assert sent(DROP, evs) == [("a", "p1|15.0|20.0|4|Mug|https://shop/mug", T)]


def test_an_update_describing_the_product_replaces_the_description():
    """docs/campaigns.md: an update carrying title, url, ... replaces the description; one with
    only price or inventory keeps it (and a field it leaves out keeps its value)."""
    evs = ready() + [upd("p1", T - 3 * D, price=20.0, inventory=4, title="Mug", url="https://shop/mug"),
                     view("a", T - D, price=20.0), upd("p1", T - H, inventory=3), upd("p1", T, price=15.0)]
    assert sent(DROP, evs) == [("a", "p1|15.0|20.0|3|Mug|https://shop/mug", T)]
    evs = ready() + [upd("p1", T - 2 * D, price=20.0, title="Mug", url="https://shop/mug"),
                     view("a", T - D, price=20.0), upd("p1", T, price=15.0, title="Mug (sale)")]
    assert sent(DROP, evs) == [("a", "p1|15.0|20.0|-|Mug (sale)|-", T)]


def test_exit_when_an_order_of_the_product_ends_its_run():
    """The documented back-in-stock example: a run ends when that product is ordered (not another)."""
    text = f"""
default_timezone: UTC
caps: {{email: null, all: null}}
campaigns:
  - id: cat
    trigger: {{catalog: back_in_stock, viewed_within: 30d}}
    reentry: every_time
    channel: email
    quiet_hours: null
    exit_when:
      - {{event: order_placed, match: {{items.product_id: product_id}}}}
    steps:
      - {{id: s0, after: 0s, template: {{subject: s, body: "{BODY}"}}}}
      - {{id: s1, after: 1d, template: {{subject: s, body: "{BODY}"}}}}
"""
    exits = campaigns(text, file="catalog.yaml")
    evs = ready("a") + ready("b") + [upd("p1", T - 2 * D, inventory=0), view("a", T - D), view("b", T - D),
                                      upd("p1", T, inventory=3), order("a", T + H, "p1"), order("b", T + H, "p2")]
    got = [(g[0], g[1], g[2], g[4]) for g in outcome(exits, evs, oracle=False)]
    assert got == [("a", "s0", "sent", T), ("b", "s0", "sent", T), ("a", "s1", "exited", T + H),
                   ("b", "s1", "sent", T + D)]


def test_render_cache_keeps_the_price_as_written():
    """Two contacts saw the same price written 20 and 20.0: each message shows its own (the
    render cache once keyed `products` by value, 20 == 20.0, and gave `a` the text of `b`)."""
    evs = ready("a") + ready("b") + [upd("p1", T - 2 * D, price=20.0), view("b", T - D, price=20),
                                      view("a", T - D + 1), upd("p1", T, price=17.99)]
    assert sorted(sent(DROP, evs)) == [("a", "p1|17.99|20.0|-|-|-", T), ("b", "p1|17.99|20|-|-|-", T)]


def test_consent_and_address_apply_to_catalog_runs():
    """An unsubscribe in the update's millisecond refuses the run; no consent, no address as always."""
    evs = ready("a") + ready("b") + [
        ev("c", "profile_updated", T - D, email="c@example.com"), ev("d", "consent_changed", T - D, channel="email",
                                                                      status="subscribed"),
        upd("p1", T - 2 * D, price=20.0)] + [view(x, T - D, price=20.0) for x in "abcd"] + [
        ev("a", "consent_changed", T, channel="email", status="unsubscribed"), upd("p1", T, price=10.0)]
    evs.sort(key=lambda e: (e.ts, e.contact_id == ""))
    assert outcome(DROP, evs) == [
        ("a", "s0", "skipped_consent", "unsubscribed", T), ("b", "s0", "sent", "p1|10.0|20.0|-|-|-", T),
        ("c", "s0", "skipped_consent", "no_consent", T), ("d", "s0", "failed", "no_address", T)]


def test_reentry_counts_per_product():
    """once_per 7d: a second drop of p1 within 7 days is refused, a drop of p2 is not, p1 after 7 days is."""
    c = camps("{catalog: price_drop, min_drop: 10%, viewed_within: 30d}", reentry="{once_per: 7d}")
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), upd("p2", T - 2 * D, price=20.0),
                     view("a", T - D, price=20.0), view("a", T - D, pid="p2", price=20.0),
                     upd("p1", T, price=18.0), upd("p1", T + D, price=10.0), upd("p2", T + D, price=10.0),
                     upd("p1", T + 7 * D, price=5.0)]
    assert [(g[2], g[3][:2], g[4]) for g in outcome(c, evs)] == [
        ("sent", "p1", T), ("sent", "p2", T + D), ("skipped_duplicate", "re", T + D), ("sent", "p1", T + 7 * D)]


def test_an_open_run_of_the_product_absorbs_a_new_trigger():
    """A two-step run of p1 is open for a day: a second drop of p1 starts nothing, one of p2 does;
    a drop of p1 once its run has ended (1 ms after its last step) starts a new run."""
    c = camps("{catalog: price_drop, min_drop: 10%, viewed_within: 30d}", steps=("0s", "1d"))
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), upd("p2", T - 2 * D, price=20.0),
                     view("a", T - D, price=20.0), view("a", T - D, pid="p2", price=20.0),
                     upd("p1", T, price=18.0), upd("p1", T + H, price=10.0), upd("p2", T + H, price=10.0),
                     upd("p1", T + D + 1, price=5.0)]
    assert [(g[1], g[3][:7], g[4]) for g in outcome(c, evs) if g[2] == "sent"] == [
        ("s0", "p1|18.0", T), ("s0", "p2|10.0", T + H), ("s1", "p1|18.0", T + D), ("s0", "p1|5.0|", T + D + 1),
        ("s1", "p2|10.0", T + D + H), ("s1", "p1|5.0|", T + 2 * D + 1)]


def test_two_campaigns_and_contacts_on_one_update():
    c = camps("{catalog: price_drop, min_drop: 10%, viewed_within: 30d}", extra=f"""
  - id: deep
    trigger: {{catalog: price_drop, min_drop: 40%, viewed_within: 30d}}
    reentry: every_time
    channel: email
    quiet_hours: null
    steps:
      - {{id: s0, after: 0s, template: {{subject: s, body: "{BODY}"}}}}
""")
    evs = ready("a") + ready("b") + [upd("p1", T - 2 * D, price=20.0), view("a", T - D, price=20.0),
                                      view("b", T - D, price=12.0), upd("p1", T, price=10.0)]
    msgs = [o for o in run(c, evs, T + D) if isinstance(o, Message)]
    assert sorted((m.contact_id, m.campaign_id) for m in msgs) == [("a", "cat"), ("a", "deep"), ("b", "cat")]
    assert outcome(c, evs) == sorted(outcome(c, evs), key=lambda g: (g[4], g))


def test_a_redelivered_update_is_processed_once():
    """The same update id again (next, or after later events): one message, not a second drop."""
    u = upd("p1", T, price=18.0)
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), view("a", T - D, price=20.0), u, u,
                     view("a", T + H, price=20.0), u, upd("p1", T + 2 * H, price=20.0)]
    assert sent(DROP, evs) == [("a", "p1|18.0|20.0|-|-|-", T)]


def test_catalogue_ids_are_their_own_namespace():
    """An update whose id is also a contact event's id is not taken for a redelivery."""
    v = view("a", T - D, price=20.0)
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), v, upd("p1", T, eid=v.event_id, price=18.0)]
    assert len(sent(DROP, evs)) == 1


def test_a_redelivered_view_without_a_price_keeps_the_price_seen_first():
    """The view (no price) saw 20; the catalogue then went to 19; the view comes again (at-least-once
    delivery): the contact still saw 20, so 18 is a 10 % drop for it (first delivery counts)."""
    v = view("a", T - D)
    evs = ready() + [upd("p1", T - 2 * D, price=20.0), v, upd("p1", T - H, price=19.0), v, upd("p1", T, price=18.0)]
    assert sent(DROP, evs) == [("a", "p1|18.0|20.0|-|-|-", T)]


def test_cuts_and_restores_at_every_position():
    """Every single batch cut and restore point of a stream with every kind of event."""
    evs = ready("a") + ready("b") + [
        upd("p1", T - 2 * D, price=20.0, inventory=0), view("a", T - D, price=20.0), cart("b", T - D),
        view("b", T, price=25), order("a", T, "p2"), upd("p1", T, price=18.0, inventory=6),
        upd("p1", T + H, inventory=2), order("b", T + H, "p1"), upd("p1", T + 2 * H, price=9.0)]
    until = T + D
    want = rows(run(DROP, evs, until))
    assert len([w for w in want if w[2] == "sent"]) == 3
    for i in range(1, len(evs)):
        assert rows(run(DROP, evs, until, [i], restore_at=[i])) == want, f"cut and restore at {i}"


def test_watches_are_bounded_per_contact():
    """A contact's 51st product forgets the least recently seen one (documented bound)."""
    n = MAX_PRODUCTS_PER_CONTACT
    evs = ready() + [upd(f"p{i}", T - 2 * D, price=20.0) for i in range(n + 1)]
    evs += [view("a", T - D + i, pid=f"p{i}", price=20.0) for i in range(n + 1)]
    evs += [upd("p0", T, price=10.0), upd("p1", T, price=10.0)]
    assert [body[:3] for _, body, _ in sent(DROP, evs, oracle=False)] == ["p1|"]


# -- catalogue input ------------------------------------------------------------------------------

def _rec(**kw) -> bytes:
    base = {"event_id": "u1", "product_id": "p1", "type": "product_updated", "ts": "2026-11-20T09:00:00Z",
            "properties": {"price": 18.0, "inventory": 3, "title": "Mug"}}
    base.update(kw)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_parse_catalog_event():
    e = parse_catalog_event(_rec())
    assert (e.event_id, e.contact_id, e.type, e.ts) == ("u1", "", "product_updated", T)
    assert e.properties == {"price": 18.0, "inventory": 3, "title": "Mug", "product_id": "p1"}
    assert parse_catalog_event(_rec(properties={"price": "18.00"})).properties["price"] == "18.00"
    assert parse_catalog_event(_rec(properties={"inventory": 0})).properties["inventory"] == 0


@pytest.mark.parametrize(("kw", "reason"), [
    ({"event_id": ""}, "bad_field"), ({"event_id": None}, "missing_field"), ({"product_id": 7}, "bad_field"),
    ({"type": "product_viewed"}, "bad_field"), ({"ts": None}, "missing_field"), ({"ts": "yesterday"}, "bad_ts"),
    ({"properties": []}, "bad_properties"), ({"properties": {}}, "missing_field"),
    ({"properties": {"title": "Mug"}}, "missing_field"), ({"properties": {"price": -1}}, "bad_field"),
    ({"properties": {"price": True}}, "bad_field"), ({"properties": {"price": "abc"}}, "bad_field"),
    ({"properties": {"inventory": -1}}, "bad_field"), ({"properties": {"inventory": 2.5}}, "bad_field"),
    ({"properties": {"inventory": True}}, "bad_field")])
def test_invalid_catalog_events_are_dead_letters(kw, reason):
    got = parse_catalog_event(_rec(**kw))
    assert type(got) is Invalid and got.reason == reason, got


def test_catalog_event_garbage():
    assert parse_catalog_event(b"{nope").reason == "not_json"
    assert parse_catalog_event(b"[1]").reason == "not_object"
    assert parse_catalog_event(_rec(), max_bytes=10).reason == "too_large"


# -- definitions ----------------------------------------------------------------------------------

def error(trigger: str) -> DefinitionError:
    text = textwrap.dedent(f"""
        campaigns:
          - id: cat
            trigger: {trigger}
            channel: email
            steps:
              - {{id: s0, after: 0s, template: {{subject: s, body: b}}}}
        """)
    with pytest.raises(DefinitionError) as exc:
        campaigns(text, file="shop.yaml")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("shop.yaml: campaigns[0].trigger"), msg
    return exc.value


def test_catalog_trigger_definitions():
    c = camps("{catalog: price_drop, min_drop: 10%}").campaigns[0].catalog
    assert (c.kind, c.within_ms, c.drop.percent, str(c.drop)) == ("price_drop", 30 * D, True, "10%")
    c = camps("{catalog: price_drop, min_drop: 4.99, viewed_within: 90d}").campaigns[0].catalog
    assert (c.within_ms, c.drop.percent, str(c.drop)) == (90 * D, False, "4.99")
    c = camps("{catalog: low_stock, below: 2}").campaigns[0].catalog
    assert (c.kind, c.below, c.within_ms) == ("low_stock", 2, 30 * D)
    c = camps("{catalog: back_in_stock, viewed_within: 1ms}").campaigns[0].catalog
    assert (c.kind, c.within_ms) == ("back_in_stock", 1)


@pytest.mark.parametrize(("trigger", "path", "words"), [
    ("{catalog: price_drop, viewed_within: 30d}", "min_drop", "required"),
    ("{catalog: price_drop, min_drop: 0%}", "min_drop", "'0%'"),
    ("{catalog: price_drop, min_drop: 100%}", "min_drop", "'100%'"),
    ("{catalog: price_drop, min_drop: 0}", "min_drop", "0"),
    ("{catalog: price_drop, min_drop: -5}", "min_drop", "-5"),
    ("{catalog: price_drop, min_drop: ten}", "min_drop", "'ten'"),
    ("{catalog: low_stock, carted_within: 7d}", "below", "required"),
    ("{catalog: low_stock, below: 1}", "below", "2 or more"),
    ("{catalog: low_stock, below: 0}", "below", "2 or more"),
    ("{catalog: low_stock, below: 5, viewed_within: 7d}", "viewed_within", "low_stock"),
    ("{catalog: back_in_stock, min_drop: 10%}", "min_drop", "back_in_stock"),
    ("{catalog: back_in_stock, below: 3}", "below", "back_in_stock"),
    ("{catalog: price_drop, min_drop: 10%, carted_within: 7d}", "carted_within", "price_drop"),
    ("{catalog: price_drop, min_drop: 10%, viewed_within: 91d}", "viewed_within", "90d"),
    ("{catalog: back_in_stock, viewed_within: 2161h}", "viewed_within", "90d"),
    ("{catalog: low_stock, below: 5, carted_within: 100d}", "carted_within", "90d"),
    ("{catalog: back_in_stock, viewed_within: 0s}", "viewed_within", "1ms"),
    ("{catalog: back_in_stock, viewed_within: soon}", "viewed_within", "'soon'"),
    ("{catalog: price_drop, min_drop: 10%, on: enter}", "on", "catalog"),
    ("{catalog: back_in_stock, where: []}", "where", "catalog"),
    ("{event: order_placed, min_drop: 10%}", "min_drop", "event"),
    ("{catalog: sale}", "catalog", "price_drop"),
])
def test_catalog_trigger_errors(trigger, path, words):
    """One line naming the file and the path of the option, the problem, and a fix."""
    e = error(trigger)
    assert (e.file, e.path) == ("shop.yaml", f"campaigns[0].trigger.{path}"), str(e)
    assert words in e.problem and e.fix, str(e)


def test_catalog_and_another_trigger_kind():
    e = error("{catalog: back_in_stock, event: order_placed}")
    assert e.path == "campaigns[0].trigger" and "exactly one" in e.problem
