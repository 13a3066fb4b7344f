"""`espresso demo` pieces: its segments and campaigns load, its traffic is valid and sendable,
its words and message lines are right, its flags are typed settings."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import yaml

from commands.demo import (DemoSettings, ProductLine, Topics, Traffic, add_demo_args, demo_segments_yaml,
                           describe_change, describe_update)
from commands.demo_messages import (Trigger, catalog_triggers, demo_campaigns_yaml, describe_message, event_triggers,
                                    message_latency, message_text, percentiles, run_id, sequence_steps)
from state.definitions import parse_segments
from state.errors import ConfigError
from state.events import Invalid, parse_event
from state.program import compile_program
from state.timeutil import format_ms


def test_demo_segments_compile_with_a_short_window():
    """The demo's YAML is the built-in espresso trio with the demo window, plus abandoned checkout."""
    text = demo_segments_yaml("45s", "15s", "1m")
    segs = parse_segments(yaml.safe_load(text), "demo.yaml")
    compile_program(segs)
    assert [s.id for s in segs] == ["email-espresso", "sms-espresso", "push-espresso", "abandoned-checkout"]
    assert "within: 45s" in text and "within: 72h" not in text


def test_traffic_is_valid_realistic_and_deterministic():
    """Every event the demo produces is valid; the mix has sign-ups, opens, checkouts and orders,
    product views and carts; the same seed gives the same stream; broken records only come from
    `invalid()`."""
    def run(seed):
        t = Traffic(contacts=50, seed=seed)
        evs = []
        for i in range(2000):
            evs += t.tick(1_790_000_000_000 + i * 100)
        return evs
    evs = run(1)
    assert evs == run(1)
    for ev in evs:
        assert not isinstance(parse_event(orjson.dumps(ev)), Invalid), ev
    types = {e["type"] for e in evs}
    assert {"consent_changed", "profile_updated", "email_open", "email_click", "checkout_started",
            "order_placed", "sms_click", "push_open", "product_viewed", "added_to_cart"} <= types
    t = Traffic(10, seed=2, invalid_rate=1.0)
    t.tick(0)
    bad = [t.invalid(0) for _ in range(20)]
    assert all(isinstance(parse_event(b), Invalid) for b in bad)


def test_shop_traffic_races_the_automations_on_the_demo_clock():
    """What the shop automations react to: checkouts with a checkout_id and items, some paid by an
    order with the same checkout_id (most before the first reminder, 3 h on the demo's clock, the
    rest between the two), views with product_id and price, a quarter followed by that product
    in the cart within 30 min (scaled), before the 1 h browse reminder; email sign-ups."""
    window = 45_000
    scale = window / (72 * 3_600_000)
    t = Traffic(contacts=80, seed=5, window_ms=window)
    evs = []
    for i in range(4000):
        evs += t.tick(1_790_000_000_000 + i * 125)
    ts = {e["event_id"]: int(datetime.fromisoformat(e["ts"]).timestamp() * 1000) for e in evs}
    checkouts = {e["properties"]["checkout_id"]: e for e in evs if e["type"] == "checkout_started"}
    assert checkouts and all(e["properties"]["items"] for e in checkouts.values())
    paid = [(checkouts[e["properties"]["checkout_id"]], e) for e in evs
            if e["type"] == "order_placed" and "checkout_id" in e["properties"]]
    assert 0.3 < len(paid) / len(checkouts) < 0.6
    waits = [ts[o["event_id"]] - ts[c["event_id"]] for c, o in paid]
    first, second = 3 * 3_600_000 * scale, 24 * 3_600_000 * scale  # the checkout series' steps
    assert sum(w < first for w in waits) > len(waits) / 2 and any(first < w < second for w in waits)
    assert all(w < second + 500 for w in waits)  # an order arrives at the tick after it is due
    views = [e for e in evs if e["type"] == "product_viewed"]
    assert views and all({"product_id", "price"} <= e["properties"].keys() for e in views)
    carts = [e for e in evs if e["type"] == "added_to_cart"]
    assert 0.15 < len(carts) / len(views) < 0.35
    assert any(e["type"] == "consent_changed" and e["properties"] == {
        "channel": "email", "status": "subscribed", "reason": "signup_form"} for e in evs)


def test_the_shop_changes_its_catalogue_now_and_then_on_the_demo_clock():
    """The shop's catalogue: a first update of every product at start (valid product updates
    with a title, price and stock), then one change every 20-40 s at a 45 s window, the first a
    price drop of 10-30 %: drops, ends of sales, sell-outs restocked at the next change, stock
    falling under 5. Views and carts carry the current price; deterministic for a seed."""
    from state.catalog.events import parse_catalog_event

    def run(seed):
        t = Traffic(contacts=80, seed=seed, window_ms=45_000)
        t0 = 1_790_000_000_000
        ups, evs = t.catalog_start(t0), []
        for i in range(8 * 600):  # 10 minutes at 8 events/s
            ups += t.catalog_tick(t0 + i * 125)
            evs += t.tick(t0 + i * 125)
        return t0, ups, evs
    t0, ups, evs = run(7)
    assert (ups, evs) == run(7)[1:]
    first = ups[:6]
    assert [u["ts"] for u in first] == [format_ms(t0)] * 6 and len({u["product_id"] for u in first}) == 6
    for u in ups:
        assert not isinstance(parse_catalog_event(orjson.dumps(u)), Invalid), u
        assert u["type"] == "product_updated" and {"price", "inventory", "title", "url"} <= u["properties"].keys()
    at = [int(datetime.fromisoformat(u["ts"]).timestamp() * 1000) for u in ups[6:]]
    gaps = [b - a for a, b in zip([t0] + at, at)]
    assert 14 <= len(at) <= 30 and all(19_000 <= g <= 41_000 for g in gaps), gaps
    book, kinds = {}, []
    for u in ups:
        pr = u["properties"]
        new = ProductLine(pr["title"], pr["price"], pr["inventory"])
        kinds.append(describe_update(book.get(u["product_id"]), new)[0])
        book[u["product_id"]] = new
    assert kinds[:6] == ["first"] * 6 and kinds[6] == "price_drop"
    assert {"price_drop", "sale_over", "sold_out", "back_in_stock", "low_stock"} <= set(kinds), kinds
    for u, kind in zip(ups, kinds):  # a sell-out is restocked at the next change
        if kind == "sold_out" and u is not ups[-1]:
            assert kinds[ups.index(u) + 1] == "back_in_stock"
    # views and carts carry the price of the moment: after the first drop, that product's new price
    drop = ups[6]
    after = [e for e in evs if e["type"] in ("product_viewed", "added_to_cart")
             and e["properties"]["product_id"] == drop["product_id"] and e["ts"] > drop["ts"]]
    assert after and after[0]["properties"]["price"] == drop["properties"]["price"]
    assert Topics("e", "c", "d", "m", "dec", "conv", "cat").partitions()["cat"] == 1


def test_catalogue_updates_are_one_line_each():
    """A product update in words: the price drop with its percentage, the end of a sale, sold
    out, back in stock, running low; what it may fire (a catalog trigger's kind) first."""
    cups = ProductLine("Espresso cups", "24.00", 20)
    assert describe_update(cups, cups._replace(price="19.20")) == (
        "price_drop", "PRICE", "Espresso cups 24.00 -> 19.20 (-20 %)")
    assert describe_update(cups._replace(price="19.20"), cups) == (
        "sale_over", "PRICE", "Espresso cups 19.20 -> 24.00 (sale over)")
    assert describe_update(cups, cups._replace(inventory=0))[::2] == ("sold_out", "Espresso cups sold out")
    assert describe_update(cups._replace(inventory=0), cups) == ("back_in_stock", "STOCK", "Espresso cups back in stock (20)")
    assert describe_update(cups, cups._replace(inventory=3)) == ("low_stock", "STOCK", "Espresso cups: only 3 left")
    assert describe_update(cups._replace(inventory=4), cups._replace(inventory=3))[0] == "stock"  # already low
    assert describe_update(None, cups)[0] == "first"


def test_changes_are_described_in_words():
    """An event-caused change names what the person did; a time-caused one what aged out."""
    ev = lambda seg, d, typ: {"segment_id": seg, "direction": d, "cause": {"kind": "event", "type": typ}}  # noqa: E731
    tm = lambda seg, d: {"segment_id": seg, "direction": d, "cause": {"kind": "time"}}  # noqa: E731
    assert describe_change(ev("email-espresso", "enter", "email_open"), "2m", "30s", "2m") == "opened an email"
    assert describe_change(ev("email-espresso", "exit", "order_placed"), "2m", "30s", "2m") == "placed an order"
    assert describe_change(ev("email-espresso", "exit", "consent_changed"), "2m", "30s", "2m") == "unsubscribed"
    assert describe_change(tm("email-espresso", "exit"), "2m", "30s", "2m") == "email open/click aged out (window 2m)"
    assert "order aged out" in describe_change(tm("sms-espresso", "enter"), "2m", "30s", "2m")
    assert describe_change(tm("abandoned-checkout", "enter"), "2m", "30s", "2m") == "checkout not completed within 30s"
    assert describe_change(tm("lapsed-customer", "enter"), "2m", "30s", "2m", "1350s") == \
        "no order for 1350s (90d in production)"
    assert describe_change(ev("lapsed-customer", "exit", "order_placed"), "2m", "30s", "2m") == "placed an order"


# -- campaigns and messages -------------------------------------------------------------
def _demo_campaigns(tmp_path, window: str = "45s", after: str = "15s", expires: str = "1m"):
    from state.campaigns import load_campaigns
    from state.timeutil import parse_duration

    segs = parse_segments(yaml.safe_load(demo_segments_yaml(window, after, expires)), "demo-segments.yaml")
    path = tmp_path / "demo-campaigns.yaml"
    path.write_text(demo_campaigns_yaml(parse_duration(window)))
    return segs, load_campaigns(path, segs)


def test_demo_campaigns_are_the_builtin_ones_on_the_demo_clock(tmp_path):
    """The demo's campaign file loads with `load_campaigns` against the demo segments; it is both
    built-in files (`--campaigns builtin`) but the birthday (a local clock time), with every
    duration x window/72h (delays, sequence steps, caps, re-entry, deferral limits, the win-back
    segment's 90 days), triggers, run keys and exits unchanged, no quiet hours and stale messages
    still sent; templates, channels, priorities and variants unchanged."""
    from state.campaigns import builtin_campaigns

    segs, camps = _demo_campaigns(tmp_path)
    compile_program(list(camps.segments), camps.required_keep())
    builtin = builtin_campaigns()
    shape = lambda c: (c.id, c.channel, c.priority, c.kind, c.segment, c.event, c.exits, c.run_key,  # noqa: E731
                       c.max_runs, c.reentry, [(s.id, [v.name for v in s.variants]) for s in c.steps])
    assert [shape(c) for c in camps.campaigns] == [shape(c) for c in builtin.campaigns if c.id != "birthday"]
    assert "birthday" in builtin.by_id and builtin.by_id["birthday"].kind == "date"
    text = demo_campaigns_yaml(45_000)
    assert "# Left out: birthday (a date trigger fires at a local clock time" in text
    by_id = camps.by_id
    steps = lambda cid: [(s.id, s.after_ms) for s in by_id[cid].steps]  # noqa: E731
    assert steps("checkout-series") == [("kept", 1900), ("incentive", 15_000)]  # 3h -> 1.875 s, rounded; 24h
    assert by_id["checkout-series"].exits[0].type == "order_placed" and by_id["checkout-series"].run_key == \
        ("checkout_id",)
    assert steps("post-purchase") == [("thanks", 0), ("arrived", 30_000), ("tips", 105_000), ("survey", 315_000)]
    assert steps("welcome-series") == [("welcome", 0), ("story", 30_000), ("bestsellers", 75_000)]
    assert steps("browse-abandonment") == [("reminder", 630)]  # 1h
    assert steps("win-back") == [("miss-you", 0), ("incentive", 210_000)]
    assert by_id["email-espresso-sms-followup"].delay_ms == 1300  # 2h x 45s/72h = 1.25 s, rounded
    assert by_id["email-espresso-resend"].reentry_ms == 105_000  # 7d
    assert by_id["checkout-series"].max_defer_ms == 7_500 and by_id["win-back"].reentry_ms == 2_700_000  # 12h, 180d
    assert {c.name: c.per_ms for c in camps.caps} == {"email": 10_000, "sms": 45_000, "push": 15_000, "all": 15_000}
    assert all(c.quiet is None and c.allow_stale and c.max_staleness_ms == 30_000 for c in camps.campaigns)
    # the demo segments, plus the win-back segment of the shop file on the demo's clock (90d)
    assert [s.id for s in camps.segments] == [s.id for s in segs] + ["lapsed-customer"]
    lapsed = next(s for s in yaml.safe_load(text)["segments"] if s["id"] == "lapsed-customer")
    assert lapsed["when"]["all"][1] == {"inactive": {"type": "order_placed", "duration": "1350s"}}
    assert sequence_steps(text)["checkout-series"] == ("kept", "incentive") and "email-espresso-resend" not in \
        sequence_steps(text)
    assert event_triggers(text) == {"order_placed": ("post-purchase", "cross-sell"),
                                    "checkout_started": ("checkout-series",),
                                    "product_viewed": ("browse-abandonment",), "consent_changed": ("welcome-series",)}
    # catalog triggers: who viewed or carted within the window on the demo's clock, re-entry per product too
    assert [(by_id[c].catalog.kind, by_id[c].catalog.within_ms, by_id[c].reentry_ms)
            for c in ("price-drop", "back-in-stock", "low-stock")] == [
        ("price_drop", 450_000, 105_000), ("back_in_stock", 450_000, 105_000), ("low_stock", 105_000, 105_000)]
    assert str(by_id["price-drop"].catalog.drop) == "10%" and by_id["low-stock"].catalog.below == 5
    # they wait for a cap (in the first minutes every welcome has just taken it) rather than skip
    assert {(by_id[c].cap_policy, by_id[c].max_defer_ms) for c in ("price-drop", "back-in-stock", "low-stock")} == {
        ("defer", 15_000)}
    assert catalog_triggers(text) == {"price-drop": "price_drop", "back-in-stock": "back_in_stock",
                                      "low-stock": "low_stock"}
    # a tiny window still gives valid (positive, ordered) durations
    _, small = _demo_campaigns(tmp_path, "5s", "2s", "8s")
    assert all(c.delay_ms >= 0 and c.max_defer_ms >= 1 for c in small.campaigns)
    assert [(s.id, s.after_ms) for s in small.by_id["checkout-series"].steps] == [("kept", 210), ("incentive", 1700)]


def test_demo_traffic_gives_campaigns_what_they_need(tmp_path):
    """Replayed through the demo segments and campaigns, the synthetic shop sends on every
    campaign and every checkout-series step: contacts have consent, an address per consented
    channel and a first name; paid checkouts end their series, carts their browse reminder;
    the demo finds the event behind every message of an event-triggered run by its run_id. With
    the shop's catalogue updates, the catalog campaigns send too, at the update's instant, and
    the demo finds the update behind each of their messages by its run_id."""
    from flows.replay import replay

    segs, camps = _demo_campaigns(tmp_path)
    (tmp_path / "demo-segments.yaml").write_text(demo_segments_yaml("45s", "15s", "1m"))
    t = Traffic(contacts=60, seed=3)
    evs, updates = [], t.catalog_start(1_790_000_000_000)
    for i in range(1500):
        updates += t.catalog_tick(1_790_000_000_000 + i * 125)
        evs += t.tick(1_790_000_000_000 + i * 125)
    profiles = [e["properties"] for e in evs if e["type"] == "profile_updated"]
    assert all(p["first_name"] and p["email"].endswith("@example.com") for p in profiles)
    assert any("phone" in p for p in profiles) and any("push_token" in p for p in profiles)
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in evs) + b"\n")
    (tmp_path / "catalog.jsonl").write_bytes(b"\n".join(orjson.dumps(u) for u in updates) + b"\n")
    # until 25 min after: the win-back's 90 days are 22.5 min on the demo's clock
    res = replay(tmp_path / "events.jsonl", 1_790_000_000_000 + 1500 * 125 + 25 * 60_000, tmp_path / "changes.jsonl",
                 tmp_path / "demo-segments.yaml", campaigns=str(tmp_path / "demo-campaigns.yaml"), progress=False,
                 parse_ahead=False, catalog=tmp_path / "catalog.jsonl")
    messages = [orjson.loads(line) for line in (tmp_path / "changes.messages.jsonl").read_bytes().splitlines()]
    decisions = [orjson.loads(line) for line in (tmp_path / "changes.decisions.jsonl").read_bytes().splitlines()]
    assert res.messages == len(messages) > 0
    assert {m["campaign_id"] for m in messages} == {c.id for c in camps.campaigns}
    assert {(m["campaign_id"], m["step_id"]) for m in messages} >= {
        ("checkout-series", "kept"), ("checkout-series", "incentive"), ("welcome-series", "welcome"),
        ("post-purchase", "thanks"), ("browse-abandonment", "reminder"), ("win-back", "miss-you")}
    exited = {(d["campaign_id"], d["reason"]) for d in decisions if d["outcome"] == "exited"}
    assert {("checkout-series", "exit_when:order_placed"), ("browse-abandonment", "exit_when:added_to_cart")} <= exited
    assert not [d for d in decisions if d["outcome"] == "failed"]  # never no_address, never a template error
    assert all(m["to"] and "there" not in (m["subject"] or m["body"]) for m in messages)

    # event-triggered runs: no change; the demo finds their event by run_id and names it
    runs = {}
    triggers = event_triggers(demo_campaigns_yaml(45_000))
    for e in evs:
        for cid in triggers.get(e["type"], ()):
            runs[run_id(e["contact_id"], cid, e["event_id"])] = Trigger(
                int(datetime.fromisoformat(e["ts"]).timestamp() * 1000), e["type"], None)
    catalog = catalog_triggers(demo_campaigns_yaml(45_000))
    by_event = [m for m in messages if m["change_id"] is None and m["campaign_id"] not in catalog]
    assert by_event and all(m["segment_id"] is None and m["run_id"] in runs for m in by_event)
    kept = next(m for m in by_event if m["step_id"] == "kept" and
                datetime.fromisoformat(m["due_at"]).timestamp() * 1000 - runs[m["run_id"]].at_ms == 1900)
    line = describe_message(kept, "c-0001 (Mia)", runs[kept["run_id"]], 0)
    assert f'"{kept["subject"]}"  (checkout-series/kept)  ' in line and line.endswith(" after due  [1.9s after the checkout]")

    # catalog runs: (contact, campaign, update id), due at the update's instant (later: deferred for a cap)
    at = {u["event_id"]: datetime.fromisoformat(u["ts"]) for u in updates}
    by_update = [m for m in messages if m["campaign_id"] in catalog]
    delays = []
    for m in by_update:
        update = [e for e in at if run_id(m["contact_id"], m["campaign_id"], e) == m["run_id"]]
        assert len(update) == 1, m
        delays.append((datetime.fromisoformat(m["due_at"]) - at[update[0]]).total_seconds())
    assert by_update and 0 in delays and all(0 <= d <= 15 for d in delays), delays


def _message(**over):
    rec = {"schema": 1, "message_id": "m1", "campaign_id": "email-espresso-resend", "channel": "email",
           "contact_id": "c-0019", "variant": "B", "segment_id": "email-espresso", "change_id": "ch1",
           "due_at": format_ms(1_790_000_000_000), "to": {"email": "sofia.0019@example.com"},
           "subject": "Sofia, free shipping on us until Sunday", "body": "Hi Sofia,\nin case...\n", "data": {}}
    rec.update(over)
    return rec


def test_message_lines_name_channel_person_text_campaign_and_latency():
    """A message line lines up with the change lines (time, who, a 5-wide word) and says what the
    person sees first, the campaign and variant, and the time since the event that triggered it;
    a timed message (delay, deferral, time-driven change) says how long after due it was read."""
    at = 1_790_000_000_000
    clock = datetime.fromtimestamp(at / 1000, tz=timezone.utc).astimezone().strftime("%H:%M:%S.%f")[:-3]
    now = Trigger(at, "email_open", at + 2)
    line = describe_message(_message(), "c-0019 (Sofia)", now, at + 40)
    assert line == (f'{clock}  c-0019 (Sofia)   EMAIL  "Sofia, free shipping on us until Sunday"  '
                    "(email-espresso-resend, variant B)  38 ms after the email open")
    change_line = f"{clock}  {'c-0019 (Sofia)':<16} ENTER  email-espresso      opened an email"
    assert line[:38] == change_line[:31] + "EMAIL  " and change_line[31:36] == "ENTER"
    assert message_latency(_message(), now, at + 40) == ("event", 38)

    sms = _message(channel="sms", campaign_id="email-espresso-sms-followup", variant=None, subject=None,
                   due_at=format_ms(at + 1300), body="Sofia, your favourites are still waiting: "
                   "shop.example/e?c=c-0019 - reply STOP to opt out")
    line = describe_message(sms, "c-0019 (Sofia)", now, at + 3320)
    assert '  SMS    "Sofia, your favourites are still waiting..."  (email-espresso-sms-followup)  ' \
           "2.02 s after due  [time]" in line
    assert message_latency(sms, now, at + 3320) == ("due", 2020)

    push = _message(channel="push", campaign_id="push-espresso-urgent", variant=None, subject="Almost gone",
                    body="Sofia, what you looked at is selling fast - only a few left.", stale=True)
    line = describe_message(push, "c-0019 (Sofia)", Trigger(at, "push_open", at), at + 25)
    assert '  PUSH   "Almost gone: Sofia, what you looked at is selling..."  (push-espresso-urgent)  ' \
           "25 ms after the push open  [stale]" in line
    # a time-caused change (abandoned checkout), and a change not read yet: latency after due
    assert message_latency(_message(), Trigger(at, None, None), at + 2000) == ("due", 2000)
    assert describe_message(_message(), "c-0019 (Sofia)", None, at + 5).endswith("5 ms after due")
    assert message_text(_message(subject="x" * 80)) == "x" * 53 + "..."  # no word boundary: cut anywhere
    assert message_text(_message(subject="Hi " + "y" * 60)) == "Hi " + "y" * 50 + "..."
    assert percentiles([5, 1, 3, 2, 4]) == (3, 5)


def test_message_lines_of_sequence_steps_name_the_step_and_the_event_that_started_the_run():
    """A step of a sequence is `(campaign/step)`. A run started by an event has no change line
    before it: at once, the latency names the event; a later step says how long after which
    event it was due. A step of a segment-triggered run reads like any message of a change."""
    at = 1_790_000_000_000
    who = "c-0019 (Sofia)"
    event_run = dict(segment_id=None, change_id=None, variant=None, run_id="5f0c8e2a9d3b4c1e")
    welcome = _message(campaign_id="welcome-series", step_id="welcome", subject="Welcome, Sofia", **event_run)
    line = describe_message(welcome, who, Trigger(at, "consent_changed", at + 1), at + 30)
    assert line.endswith('  EMAIL  "Welcome, Sofia"  (welcome-series/welcome)  29 ms after the sign-up')
    assert message_latency(welcome, Trigger(at, "consent_changed", at + 1), at + 30) == ("event", 29)
    kept = _message(campaign_id="checkout-series", step_id="kept", subject="Sofia, we kept your cart for you",
                    due_at=format_ms(at + 1900), **event_run)
    line = describe_message(kept, who, Trigger(at, "checkout_started", at + 1), at + 3920)
    assert line.endswith('  EMAIL  "Sofia, we kept your cart for you"  (checkout-series/kept)  2.02 s after due  '
                         "[1.9s after the checkout]")
    deferred = _message(campaign_id="browse-abandonment", step_id="reminder", due_at=format_ms(at + 630), **event_run)
    assert describe_message(deferred, who, Trigger(at, "product_viewed", None), at + 700).endswith(
        "(browse-abandonment/reminder)  70 ms after due  [630ms after the product view]")
    # its event not produced by this demo (or forgotten): after due, nothing more
    assert describe_message(kept, who, None, at + 3920).endswith("(checkout-series/kept)  2.02 s after due")
    # produced but not known when: at its instant, it is still "at" the event
    assert describe_message(welcome, who, Trigger(at, "consent_changed", None), at + 30).endswith(
        "(welcome-series/welcome)  30 ms after due  [at the sign-up]")
    # a catalog campaign's message: at the update's instant, measured from producing the update
    drop = _message(campaign_id="price-drop", subject="Sofia, Moka pot is now 31.20", **event_run)
    assert describe_message(drop, who, Trigger(at, "price_drop", at + 1), at + 41).endswith(
        '  EMAIL  "Sofia, Moka pot is now 31.20"  (price-drop)  40 ms after the price drop')
    assert describe_message(drop, who, Trigger(at, "back_in_stock", at + 1), at + 41).endswith("after the restock")
    miss = _message(campaign_id="win-back", step_id="miss-you", segment_id="lapsed-customer", variant=None,
                    subject="Sofia, we miss you", run_id="77aa")
    assert describe_message(miss, who, Trigger(at, None, None), at + 2000).endswith(
        '"Sofia, we miss you"  (win-back/miss-you)  2.00 s after due  [time]')


@pytest.fixture(scope="module")
def live_demo() -> str:
    """What `espresso demo` prints in 20 s on its embedded broker (a real Kafka-protocol broker,
    tansu) with a 5 s window (the catalogue changes every 2-4 s), shared by the live tests."""
    import os
    import subprocess
    import sys

    from connectors.embedded_broker import free_port

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the demo's own broker
    res = subprocess.run([sys.executable, "-m", "commands.cli", "demo", "--duration", "20", "--rate", "30",
                          "--window", "5s", "--abandoned-after", "2s", "--seed", "4", "--metrics-port",
                          str(free_port())],
                         cwd=root, env=env, capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    out = res.stdout
    assert res.returncode == 0 and "embedded broker" in out, out[-2000:] + res.stderr[-2000:]
    assert "the flow exited" not in out, out[-3000:]
    return out


_MSG = r'^\d\d:\d\d:\d\d\.\d{3}  c-\d{4} \(\w+\) +EMAIL  "[^"]+"  '


@pytest.mark.integration
def test_demo_prints_the_steps_of_the_shop_sequences_live(live_demo):
    """The checkout series' steps go out for abandoned checkouts with the event that started
    them, sign-ups get the welcome at once, paid checkouts end their series, and the summary
    counts steps and exits."""
    import re

    out, msg = live_demo, _MSG
    # a later step of a run started by an event: after due, then how long after which event (3h -> 210ms)
    kept = re.findall(msg + r"\(checkout-series/kept\)  -?\d+(?:\.\d\d s| ms) after due  "
                      r"\[(\d+ms|[\d.]+s) after the checkout\]$", out, re.M)
    assert kept, out[-3000:]
    assert re.search(msg + r"\(welcome-series/welcome\)  \d+(\.\d\d s| ms) after the sign-up$", out, re.M)
    assert re.search(r"^  checkout-series +\d+ sent   \d+ kept.*; \d+ runs? exited$", out, re.M), out[-1500:]
    assert re.search(r"^  other decisions: .*exited \d+", out, re.M)


@pytest.mark.integration
def test_demo_shows_catalog_triggers_live(live_demo):
    """The shop's catalogue changes on `catalog-events` are one `catalog` line each, and the
    built-in catalog campaigns write to who viewed the product: a price-drop (or back-in-stock)
    message at the update's instant, measured from producing it, or later if a cap deferred it;
    the summary counts both."""
    import re

    out = live_demo
    assert "catalogue on catalog-events: Espresso beans 1 kg 14.50, Moka pot 39.00" in out
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3}  catalog +PRICE  [^\n]+ \d+\.\d\d -> \d+\.\d\d \(-\d+ %\)$",
                     out, re.M), out[-3000:]
    lines = re.findall(_MSG + r"\((price-drop|back-in-stock)\)  -?\d+(?:\.\d\d s| ms) after (?:the (price drop|restock)"
                       r"|due  \[(?:\d+ms|[\d.]+s) after the (price drop|restock)\])$", out, re.M)
    assert lines and all((c, at or deferred) in {("price-drop", "price drop"), ("back-in-stock", "restock")}
                         for c, at, deferred in lines), out[-3000:]
    updates = re.search(r"^  catalog +(\d+) updates   .*price drop \d+", out, re.M)
    assert updates and int(updates[1]) >= 3, out[-1500:]
    sent = re.search(r"^  price-drop +(\d+) sent", out, re.M), re.search(r"^  back-in-stock +(\d+) sent", out, re.M)
    assert all(sent) and int(sent[0][1]) + int(sent[1][1]) >= len(lines), out[-1500:]


def test_demo_settings_are_typed_and_bad_values_are_one_line():
    """The demo's flags load through `commands.settings`: --duration takes seconds or a duration,
    windows are durations, and a bad value is one line naming the flag (exit code 2, no traceback)."""
    import argparse
    import subprocess
    import sys

    from commands.settings import load

    p = argparse.ArgumentParser()
    add_demo_args(p)
    s = load(DemoSettings, p.parse_args([]), {})
    assert (s.duration, s.window, s.abandoned_after, s.rate, s.no_campaigns) == (None, 45_000, 15_000, 8.0, False)
    s = load(DemoSettings, p.parse_args(["--duration", "12", "--window", "5s", "--no-campaigns"]), {})
    assert (s.duration, s.window, s.no_campaigns) == (12_000, 5_000, True)
    assert load(DemoSettings, p.parse_args(["--duration", "2m"]), {}).duration == 120_000
    for argv, expected in ((["--window", "45"], "--window: not a duration (got --window '45'); give a duration"),
                           (["--duration", "soon"], "--duration: not a duration (got --duration 'soon')"),
                           (["--rate", "0"], "--rate: must be more than 0"),
                           (["--abandoned-after", "0s"], "--abandoned-after: must be more than 0"),
                           (["--contacts", "0"], "--contacts: must be 1 or more")):
        with pytest.raises(ConfigError) as exc:
            load(DemoSettings, p.parse_args(argv), {})
        assert str(exc.value).startswith(expected) and "\n" not in str(exc.value), str(exc.value)
    res = subprocess.run([sys.executable, "-m", "commands.cli", "demo", "--window", "45"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "espresso demo: --window: not a duration (got --window '45'); give a duration such as " \
                         "45s or 2m\n"
