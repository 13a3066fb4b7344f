"""Conversions: orders attributed last-touch to released messages; holdouts; machine opens."""

from __future__ import annotations

from state.campaigns import Conversion

from .helpers import D, H, M, T0, Rig, campaigns, subscribe

CAMPS = campaigns("""
caps: {email: null, sms: null, push: null, all: null}
campaigns:
  - id: thanks
    trigger: {event: order_placed}
    run_key: order_id
    reentry: every_time
    channel: email
    steps:
      - {id: now, after: 0s, template: {subject: s, body: b}}
  - id: nudge
    trigger: {event: product_viewed}
    reentry: every_time
    channel: email
    variants: [{name: A, weight: 1}, {name: B, weight: 1}]
    template: {subject: s, body: b}
  - id: push-nudge
    trigger: {event: product_viewed}
    reentry: every_time
    channel: push
    template: {subject: s, body: b}
""")


def _rig(camps=CAMPS):
    rig = Rig(camps)
    return rig


def conversions(rig: Rig, sent: bool = False) -> list[Conversion]:
    """The conversions; without the intent-to-treat ones (group "sent") unless asked."""
    return [o for o in rig.out if isinstance(o, Conversion) and (sent or o.group != "sent")]


def released(rig: Rig, campaign: str, cid: str = "c1"):
    [m] = [m for m in rig.messages(campaign) if m.contact_id == cid][-1:]
    return m


def test_order_goes_to_the_latest_touch_inside_its_window():
    rig = _rig()
    rig.feed(subscribe(rig, "c1", T0, "email", "push") + [rig.ev("c1", "product_viewed", T0 + M, product_id="p")])
    rig.until(T0 + 2 * M)
    nudge, push = released(rig, "nudge"), released(rig, "push-nudge")
    rig.feed([rig.ev("c1", "email_open", T0 + H, message_id=nudge.message_id),
              rig.ev("c1", "push_open", T0 + 2 * H, message_id=push.message_id),
              rig.ev("c1", "order_placed", T0 + 3 * H, order_id="o1", value=40.0, currency="EUR")])
    rig.until(T0 + 4 * H)
    [c] = conversions(rig)
    assert (c.campaign_id, c.message_id, c.touch, c.touch_at, c.order_id, c.value, c.group) == (
        "push-nudge", push.message_id, "open", T0 + 2 * H, "o1", 40.0, "message")


def test_window_edges_and_click_over_open_in_one_millisecond():
    rig = _rig()
    rig.feed(subscribe(rig, "c1", T0, "email", "push") + [rig.ev("c1", "product_viewed", T0 + M, product_id="p")])
    rig.until(T0 + 2 * M)
    nudge, push = released(rig, "nudge"), released(rig, "push-nudge")
    t = T0 + H
    rig.feed([rig.ev("c1", "push_open", t, message_id=push.message_id),
              rig.ev("c1", "email_click", t, message_id=nudge.message_id),
              rig.ev("c1", "email_open", t, message_id=nudge.message_id),
              # the push open's 24 h window has ended here (t + 24 h is outside), the email's 5 d not
              rig.ev("c1", "order_placed", t + 24 * H, order_id="o1", value=1, currency="EUR"),
              # exactly 5 d after the click: outside (o - 5d < s <= o fails)
              rig.ev("c1", "order_placed", t + 5 * D, order_id="o2", value=1, currency="EUR")])
    rig.until(t + 6 * D)
    got = [(c.order_id, c.campaign_id, c.touch) for c in conversions(rig) if c.group == "message"]
    assert got == [("o1", "nudge", "click")]  # click beats open and push at the same ms; o2 is unattributed


def test_unknown_other_contacts_and_machine_touches_are_ignored_and_counted():
    rig = _rig()
    rig.feed(subscribe(rig, "c1", T0, "email") + subscribe(rig, "c2", T0, "email")
             + [rig.ev("c1", "product_viewed", T0 + M, product_id="p")])
    rig.until(T0 + 2 * M)
    nudge = released(rig, "nudge")
    rig.feed([rig.ev("c2", "email_click", T0 + H, message_id=nudge.message_id),  # someone else's message
              rig.ev("c1", "email_click", T0 + H, message_id="f" * 32),  # never released
              rig.ev("c1", "email_open", T0 + H, message_id=nudge.message_id, machine_open=True),
              rig.ev("c1", "order_placed", T0 + 2 * H, order_id="o1"),
              rig.ev("c2", "order_placed", T0 + 2 * H, order_id="o2")])
    rig.until(T0 + 3 * H)
    assert conversions(rig) == []
    assert rig.engine.stats["touches_unknown"] == 2 and rig.engine.stats["touches_machine"] == 1


def test_holdout_is_a_deterministic_share_and_its_orders_count():
    camps = campaigns("""
    caps: {email: null, sms: null, push: null, all: null}
    campaigns:
      - id: nudge
        trigger: {event: product_viewed}
        reentry: every_time
        holdout: 30%
        channel: email
        template: {subject: s, body: b}
    """)
    rig = _rig(camps)
    n = 400
    evs = []
    for i in range(n):
        evs += subscribe(rig, f"c{i}", T0, "email") + [rig.ev(f"c{i}", "product_viewed", T0 + M, product_id="p")]
    rig.feed(evs)
    rig.feed([rig.ev(f"c{i}", "order_placed", T0 + H, order_id=f"o{i}", value=10) for i in range(n)])
    rig.until(T0 + 2 * H)
    held = {d.contact_id for d in rig.decisions("nudge", "held_out")}
    sent = {m.contact_id for m in rig.messages("nudge")}
    assert held.isdisjoint(sent) and len(held) + len(sent) == n
    assert 0.22 * n < len(held) < 0.38 * n
    hc = {c.contact_id for c in conversions(rig) if c.group == "holdout"}
    assert hc == held and all(c.message_id is None for c in conversions(rig) if c.group == "holdout")
    again = _rig(camps)
    again.feed(evs)
    again.until(T0 + 2 * M)
    assert {d.contact_id for d in again.decisions("nudge", "held_out")} == held  # same share on a replay


def test_attribution_survives_snapshot_restore():
    rig = _rig()
    rig.feed(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "product_viewed", T0 + M, product_id="p")])
    rig.until(T0 + 2 * M)
    nudge = released(rig, "nudge")
    rig.feed([rig.ev("c1", "email_click", T0 + H, message_id=nudge.message_id)])
    rig.until(T0 + H + 1)
    rig.restore()
    rig.feed([rig.ev("c1", "order_placed", T0 + 2 * D, order_id="o1", value=5, currency="EUR")])
    rig.until(T0 + 3 * D)
    assert [(c.campaign_id, c.variant, c.touch) for c in conversions(rig)] == [("nudge", nudge.variant, "click")]


def test_sent_conversions_count_every_order_after_a_send_touched_or_not():
    """Intent to treat: an order within the channel's click window after a campaign's message is a `sent`
    conversion of that campaign (its latest message), touched or not, like a holdout conversion."""
    rig = _rig()
    rig.feed(subscribe(rig, "c1", T0, "email", "push") + [rig.ev("c1", "product_viewed", T0 + M, product_id="p")])
    rig.until(T0 + 2 * M)
    nudge, push = released(rig, "nudge"), released(rig, "push-nudge")
    rig.feed([rig.ev("c1", "order_placed", T0 + 2 * H, order_id="o1", value=9, currency="EUR"),
              rig.ev("c1", "order_placed", T0 + M + 24 * H, order_id="o2", value=9, currency="EUR")])  # push window over
    rig.until(T0 + 3 * D)
    thanks_o1 = [m for m in rig.messages("thanks") if m.due_at == T0 + 2 * H]
    got = sorted((c.order_id, c.campaign_id, c.message_id, c.touch) for c in conversions(rig, sent=True))
    # o1: both nudges (the thank-you of o1 goes out after o1); o2: the email nudge and o1's thank-you (5 d
    # windows), not the push (its 24 h window ends exactly at o2)
    assert got == sorted([("o1", "nudge", nudge.message_id, None), ("o1", "push-nudge", push.message_id, None),
                          ("o2", "nudge", nudge.message_id, None),
                          ("o2", "thanks", thanks_o1[0].message_id, None)]), got
    assert conversions(rig) == []  # nothing was touched: no last-touch conversion
