"""One test per campaign policy, driving a real Shard + CampaignEngine in event time."""

from __future__ import annotations

from collections import Counter

import pickle

import pytest
import xxhash
import yaml

from state.campaigns.compose import pick_variant
from state.campaigns import CampaignEngine, Message, builtin_campaigns, message_id, parse_campaigns
from state.program import compile_program
from state.shard import Shard
from state.timeutil import parse_ts

from .helpers import D, H, M, T0, Rig, subscribe, campaigns

CHECKOUT_SEGMENT = {"id": "checkout-open", "name": "Checkout left open",
                    "when": {"abandoned_checkout": {"after": "1m", "expires_after": "14d"}}}


def camp(cid: str, segment: str = "email-espresso", channel: str = "email", **kw) -> dict:
    body = {"id": cid, "trigger": {"segment": segment, "on": kw.pop("on", "enter")}, "channel": channel}
    template = {"body": f"{cid} for {{{{ contact.id }}}}"}
    if channel in ("email", "push"):
        template["subject"] = f"subject {cid}"
    body["template"] = template
    body.update(kw)
    return body


def camps(*items: dict, caps: dict | None = None, tz: str | None = None):
    doc: dict = {"segments": [CHECKOUT_SEGMENT], "campaigns": list(items)}
    if caps is not None:
        doc["caps"] = caps
    if tz is not None:
        doc["default_timezone"] = tz
    return parse_campaigns(yaml.safe_load(yaml.safe_dump(doc)), "test.yaml")


NO_CAPS = {"email": None, "sms": None, "push": None, "all": None}


def outcomes(rig: Rig) -> list[tuple]:
    return [(o.campaign_id, "sent" if isinstance(o, Message) else o.outcome,
             "" if isinstance(o, Message) else o.reason, o.due_at if isinstance(o, Message) else o.at)
            for o in rig.out]


# -- triggers, ids, records ------------------------------------------------------------

def test_enter_sends_at_once_with_deterministic_id_and_address():
    """An enter triggers an immediate message at the change instant; message_id = xxh3_128(change_id, campaign)."""
    rig = Rig(camps(camp("em")))
    rig.feed(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * H)
    [msg] = rig.messages()
    [enter] = [c for c in rig.changes if c.direction == "enter"]
    change_id = enter.record()["change_id"]
    assert msg.due_at == T0 + H
    assert msg.change_id == change_id and msg.segment_id == "email-espresso"
    assert msg.message_id == message_id(change_id, "em") == xxhash.xxh3_128_hexdigest(f"{change_id}\x1fem".encode())
    rec = msg.record()
    assert rec["to"] == {"email": "c1@example.com"} and rec["subject"] == "subject em"
    assert rec["body"] == "em for c1" and rec["due_at"] == "2026-11-20T10:00:00.000Z"
    assert set(rec) >= {"schema", "message_id", "campaign_id", "channel", "contact_id", "variant", "segment_id",
                        "change_id", "due_at", "to", "subject", "body", "data"}


def test_replay_gives_same_message_ids():
    """Replaying the same events (any batching) yields the same message ids: delivery dedupes on them."""
    def once(cuts: bool) -> list[str]:
        rig = Rig(camps(camp("em"), camp("sm", channel="sms", delay="2h")))
        events = subscribe(rig, "c1", T0, "email", "sms") + [rig.ev("c1", "email_open", T0 + H)]
        if cuts:
            for e in events:
                rig.feed([e])
        else:
            rig.feed(events)
        rig.until(T0 + 5 * H)
        return sorted(m.message_id for m in rig.messages())
    assert once(False) == once(True) and len(once(False)) == 2


# -- consent --------------------------------------------------------------------------

def test_no_consent_for_channel_no_message():
    """A follow-up on another channel needs consent for that channel: none recorded -> skipped_consent."""
    rig = Rig(camps(camp("sm", channel="sms", quiet_hours=None)))
    rig.feed(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * H)
    assert rig.messages() == []
    [d] = rig.decisions("sm")
    assert (d.outcome, d.reason, d.at) == ("skipped_consent", "no_consent", T0 + H)


@pytest.mark.parametrize("batched", [True, False])
def test_unsubscribe_during_delay_cancels_even_if_resubscribed(batched):
    """An SMS unsubscribe while a delayed SMS waits cancels it (skipped_consent), whatever follows."""
    rig = Rig(camps(camp("sm", channel="sms", delay="2h", quiet_hours=None)))
    events = subscribe(rig, "c1", T0, "email", "sms") + [
        rig.ev("c1", "email_open", T0 + H),
        rig.ev("c1", "consent_changed", T0 + 2 * H, channel="sms", status="unsubscribed"),
        rig.ev("c1", "consent_changed", T0 + 2 * H + 30 * M, channel="sms", status="subscribed"),
    ]
    if batched:
        rig.feed(events)
    else:
        for e in events:
            rig.feed([e])
    rig.until(T0 + 6 * H)
    assert rig.messages() == []
    assert outcomes(rig) == [("sm", "deferred", "delay", T0 + H),
                             ("sm", "skipped_consent", "unsubscribed_while_pending", T0 + 2 * H)]


def test_unsubscribe_after_the_due_instant_does_not_cancel():
    """Consent is read as of the send instant: an unsubscribe later in the same batch does not undo it."""
    rig = Rig(camps(camp("sm", channel="sms", delay="2h", quiet_hours=None)))
    rig.feed(subscribe(rig, "c1", T0, "email", "sms") + [
        rig.ev("c1", "email_open", T0 + H),
        rig.ev("c1", "consent_changed", T0 + 4 * H, channel="sms", status="unsubscribed")])
    rig.until(T0 + 6 * H)
    [msg] = rig.messages()
    assert msg.due_at == T0 + 3 * H


def test_unsubscribe_at_the_due_millisecond_wins():
    """An unsubscribe at the very millisecond a message is due cancels it (never message a doubt)."""
    rig = Rig(camps(camp("sm", channel="sms", delay="2h", quiet_hours=None)))
    rig.feed(subscribe(rig, "c1", T0, "email", "sms") + [
        rig.ev("c1", "email_open", T0 + H),
        rig.ev("c1", "consent_changed", T0 + 3 * H, channel="sms", status="unsubscribed")])
    rig.until(T0 + 6 * H)
    assert rig.messages() == []
    assert rig.decisions("sm", "skipped_consent")[0].at == T0 + 3 * H


def test_consent_rechecked_at_send_time_with_low_level_steps():
    """Driving on_changes/advance directly, a delayed message re-reads shard.consent when due."""
    c = camps(camp("sm", channel="sms", delay="2h", quiet_hours=None))
    shard = Shard(compile_program(list(c.segments), c.required_keep()))
    engine = CampaignEngine(c)
    rig = Rig(c)
    events = subscribe(rig, "c1", T0, "email", "sms") + [rig.ev("c1", "email_open", T0 + H)]
    out = engine.on_changes(shard.apply(events) + shard.advance(T0 + H + 1), shard)
    assert [o.reason for o in out] == ["delay"]
    shard.apply([rig.ev("c1", "consent_changed", T0 + 2 * H, channel="sms", status="unsubscribed")])
    out = engine.on_changes(shard.advance(T0 + 4 * H), shard) + engine.advance(T0 + 4 * H, shard)
    assert [(o.outcome, o.reason) for o in out] == [("skipped_consent", "unsubscribed")]


# -- re-entry ---------------------------------------------------------------------------

def _reentries(rig: Rig) -> None:
    """Enter at +1h, leave (unsubscribe) and re-enter at +3h, again at +1h+1d exactly."""
    rig.feed(subscribe(rig, "c1", T0, "email") + [
        rig.ev("c1", "email_open", T0 + H),
        rig.ev("c1", "consent_changed", T0 + 2 * H, channel="email", status="unsubscribed"),
        rig.ev("c1", "consent_changed", T0 + 3 * H, channel="email", status="subscribed"),
        rig.ev("c1", "consent_changed", T0 + 4 * H, channel="email", status="unsubscribed"),
        rig.ev("c1", "email_open", T0 + 20 * H),
        rig.ev("c1", "consent_changed", T0 + H + D, channel="email", status="subscribed")])
    rig.until(T0 + 3 * D)


def test_reentry_once():
    """`once`: a contact gets the campaign at most once, later entries are skipped_duplicate."""
    rig = Rig(camps(camp("em", reentry="once"), caps=NO_CAPS))
    _reentries(rig)
    assert [m.due_at for m in rig.messages()] == [T0 + H]
    assert [(d.reason, d.at) for d in rig.decisions("em", "skipped_duplicate")] == [
        ("reentry:once", T0 + 3 * H), ("reentry:once", T0 + H + D)]


def test_reentry_once_per_window_boundary():
    """`once_per: 1d`: blocked within the day, allowed again exactly 1 d after the last send."""
    rig = Rig(camps(camp("em", reentry={"once_per": "1d"}), caps=NO_CAPS))
    _reentries(rig)
    assert [m.due_at for m in rig.messages()] == [T0 + H, T0 + H + D]
    assert [d.reason for d in rig.decisions("em", "skipped_duplicate")] == ["reentry:once_per"]


def test_reentry_every_time():
    """`every_time`: every entry sends (caps permitting)."""
    rig = Rig(camps(camp("em", reentry="every_time"), caps=NO_CAPS))
    _reentries(rig)
    assert [m.due_at for m in rig.messages()] == [T0 + H, T0 + 3 * H, T0 + H + D]


def test_default_reentry_is_once():
    """Without `reentry`, a campaign goes to a contact only once (the least intrusive default)."""
    assert camps(camp("em")).campaigns[0].reentry == "once"


# -- caps -------------------------------------------------------------------------------

def _two_emails(policy: str, **kw) -> Rig:
    rig = Rig(camps(camp("a", priority=10), camp("b", priority=1, caps=policy, **kw),
                    caps={"email": {"max": 1, "per": "16h"}}))
    rig.feed(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * D)
    return rig


def test_channel_cap_skip():
    """Email 1 per 16 h: of two emails at the same instant the higher priority goes, the other is capped."""
    rig = _two_emails("skip")
    assert [m.campaign_id for m in rig.messages()] == ["a"]
    [d] = rig.decisions("b")
    assert (d.outcome, d.reason, d.at) == ("capped", "cap:email", T0 + H)


def test_channel_cap_defer_to_exact_release():
    """Policy `defer`: the capped message is deferred to the instant the 16 h window frees, then sent."""
    rig = _two_emails("defer")
    assert [(m.campaign_id, m.due_at) for m in rig.messages()] == [("a", T0 + H), ("b", T0 + 17 * H)]
    [d] = rig.decisions("b", "deferred")
    assert (d.reason, d.due_at) == ("cap:email", T0 + 17 * H)


def test_defer_beyond_max_defer_is_capped():
    """A cap deferral longer than `max_defer` (from the first due instant) is capped instead."""
    rig = _two_emails("defer", max_defer="10h")
    assert [m.campaign_id for m in rig.messages()] == ["a"]
    assert rig.decisions("b")[0].outcome == "capped"


def test_cross_channel_cap_by_priority():
    """At most 2 per 24 h across channels: at one instant the two highest priorities go, whatever the file order."""
    c = camps(camp("e", priority=1), camp("s", channel="sms", priority=3, quiet_hours=None),
              camp("p", channel="push", priority=2), caps={"all": {"max": 2, "per": "24h"}, "email": None,
                                                           "sms": None, "push": None})
    rig = Rig(c)
    rig.feed(subscribe(rig, "c1", T0, "email", "sms", "push") + [rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * H)
    assert [m.campaign_id for m in rig.messages()] == ["s", "p"]
    assert [(d.campaign_id, d.outcome, d.reason) for d in rig.decisions()] == [("e", "capped", "cap:all")]


def test_default_caps():
    """Without `caps:`: email 1/16 h, SMS 1/72 h, push 1/24 h, at most 3 per 24 h across channels."""
    got = {(c.channel, c.max, c.per_ms) for c in camps(camp("em")).caps}
    assert got == {("email", 1, 16 * H), ("sms", 1, 72 * H), ("push", 1, 24 * H), (None, 3, 24 * H)}


# -- quiet hours --------------------------------------------------------------------------

def _sms_at(open_iso: str, tz: str | None, quiet=None, default_tz: str | None = None) -> Rig:
    kw = {} if quiet is None else {"quiet_hours": quiet}
    rig = Rig(camps(camp("sm", channel="sms", **kw), caps=NO_CAPS, tz=default_tz))
    t = parse_ts(open_iso)
    profile = {"timezone": tz} if tz else {}
    rig.feed(subscribe(rig, "c1", t - H, "email", "sms", **profile) + [rig.ev("c1", "email_open", t)])
    rig.until(t + 2 * D)
    return rig


def test_sms_quiet_hours_default_deferred_to_local_morning():
    """SMS defaults to quiet 21:00-08:00 in the contact's zone: 02:00 in New York waits until 08:00 there."""
    rig = _sms_at("2026-11-20T07:00:00Z", "America/New_York")
    [d] = rig.decisions("sm")
    assert (d.outcome, d.reason, d.due_at) == ("deferred", "quiet_hours", parse_ts("2026-11-20T13:00:00Z"))
    assert [m.due_at for m in rig.messages()] == [parse_ts("2026-11-20T13:00:00Z")]


def test_quiet_hours_use_default_timezone_without_profile_zone():
    """A contact without a (valid) time zone uses the configured default zone."""
    rig = _sms_at("2026-11-20T13:00:00Z", None, default_tz="Asia/Tokyo")  # 22:00 in Tokyo
    assert [m.due_at for m in rig.messages()] == [parse_ts("2026-11-20T23:00:00Z")]  # 08:00 in Tokyo
    rig = _sms_at("2026-11-20T13:00:00Z", "Not/AZone", default_tz="Asia/Tokyo")
    assert [m.due_at for m in rig.messages()] == [parse_ts("2026-11-20T23:00:00Z")]


def test_not_quiet_sends_at_once():
    """Outside quiet hours the SMS goes at the change instant."""
    rig = _sms_at("2026-11-20T15:00:00Z", "Europe/Paris")
    assert [m.due_at for m in rig.messages()] == [parse_ts("2026-11-20T15:00:00Z")]


@pytest.mark.parametrize("open_iso, quiet, expected", [
    # spring forward (New York, 2026-03-08 02:00 EST -> 03:00 EDT): 08:00 is EDT, 12:00Z
    ("2026-03-08T04:00:00Z", None, "2026-03-08T12:00:00Z"),
    # fall back (2026-11-01 02:00 EDT -> 01:00 EST): 08:00 is EST, 13:00Z
    ("2026-11-01T03:00:00Z", None, "2026-11-01T13:00:00Z"),
    # quiet ends at 02:30, a local time that does not exist that day: allowed from the jump (03:00 EDT)
    ("2026-03-08T05:00:00Z", {"start": "22:00", "end": "02:30"}, "2026-03-08T07:00:00Z"),
    # quiet starts at 01:30, inside the repeated hour: the second 01:00-01:30 is allowed again
    ("2026-11-01T05:40:00Z", {"start": "01:30", "end": "08:00"}, "2026-11-01T06:00:00Z"),
])
def test_quiet_hours_across_dst(open_iso, quiet, expected):
    """Quiet hours follow the contact's wall clock across DST changes, deferring to the first allowed instant."""
    rig = _sms_at(open_iso, "America/New_York", quiet=quiet)
    assert [m.due_at for m in rig.messages()] == [parse_ts(expected)]


def test_email_has_no_default_quiet_hours_but_can_declare_them():
    """Email and push have no quiet hours unless given; given ones apply like for SMS."""
    assert camps(camp("em")).campaigns[0].quiet is None
    assert camps(camp("p", channel="push")).campaigns[0].quiet is None
    assert camps(camp("s", channel="sms")).campaigns[0].quiet == (21 * 60, 8 * 60)
    assert camps(camp("s", channel="sms", quiet_hours=None)).campaigns[0].quiet is None
    assert camps(camp("em", quiet_hours={"start": "22:00", "end": "07:00"})).campaigns[0].quiet == (22 * 60, 7 * 60)


# -- delays and cancellation ----------------------------------------------------------------

REMINDER = camp("cart", segment="checkout-open", delay="3h", fallbacks={"first_name": "there"},
                template={"subject": "Your cart", "body": "Hi {{ contact.first_name }}:"
                          "{% for p in products %} {{ p.product_id }}{% endfor %}"})


def test_delayed_reminder_sent_with_products():
    """Abandoned checkout: the reminder goes `delay` after entering, listing the checkout's items."""
    rig = Rig(camps(REMINDER))
    rig.feed(subscribe(rig, "c1", T0, "email") + [
        rig.ev("c1", "checkout_started", T0 + H, items=[{"product_id": "cup"}, {"product_id": "mug"}])])
    rig.until(T0 + D)
    [m] = rig.messages()
    assert m.due_at == T0 + H + M + 3 * H and m.body == "Hi there: cup mug"


def test_delay_cancelled_when_leaving_segment():
    """Ordering before the reminder is due makes the contact leave the segment: the reminder is cancelled."""
    rig = Rig(camps(REMINDER))
    rig.feed(subscribe(rig, "c1", T0, "email") + [
        rig.ev("c1", "checkout_started", T0 + H, items=[]),
        rig.ev("c1", "order_placed", T0 + 2 * H, items=[])])
    rig.until(T0 + D)
    assert rig.messages() == []
    assert outcomes(rig)[-1] == ("cart", "cancelled", "left_segment", T0 + 2 * H)


def test_exit_trigger_cancelled_on_reentry():
    """A delayed message on `exit` is cancelled if the contact re-enters the segment before it is due."""
    rig = Rig(camps(camp("bye", channel="sms", on="exit", delay="1h", quiet_hours=None)))
    rig.feed(subscribe(rig, "c1", T0, "email", "sms") + [
        rig.ev("c1", "email_open", T0 + H),
        rig.ev("c1", "consent_changed", T0 + 2 * H, channel="email", status="unsubscribed"),
        rig.ev("c1", "consent_changed", T0 + 2 * H + 30 * M, channel="email", status="subscribed")])
    rig.until(T0 + D)
    assert rig.messages() == []
    assert outcomes(rig)[-1] == ("bye", "cancelled", "re_entered_segment", T0 + 2 * H + 30 * M)


def test_pending_survives_snapshot_restore():
    """A delayed message pending at a snapshot is sent after restoring from the pickled snapshots."""
    rig = Rig(camps(REMINDER))
    rig.feed(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "checkout_started", T0 + H, items=[])])
    rig.feed([], T0 + 2 * H)
    assert rig.engine.next_due() == T0 + H + M + 3 * H
    rig.restore()
    assert rig.engine.next_due() == T0 + H + M + 3 * H
    rig.until(T0 + D)
    assert [m.due_at for m in rig.messages()] == [T0 + H + M + 3 * H]


# -- A/B variants -----------------------------------------------------------------------------

AB = camp("ab", variants=[{"name": "A", "weight": 80}, {"name": "B", "weight": 20,
                                                           "template": {"subject": "B for {{ contact.id }}"}}])


def test_ab_split_deterministic_and_by_weight():
    """Variants are picked by a hash of contact and campaign: stable across runs, shares close to the weights."""
    def split(n: int) -> dict[str, str]:
        rig = Rig(camps(AB))
        events = []
        for i in range(n):
            events += subscribe(rig, f"c{i}", T0, "email") + [rig.ev(f"c{i}", "email_open", T0 + H)]
        rig.feed(events)
        rig.until(T0 + 2 * H)
        for m in rig.messages():
            assert m.subject == (f"B for {m.contact_id}" if m.variant == "B" else "subject ab")
            assert m.record()["variant"] == m.variant
        return {m.contact_id: m.variant for m in rig.messages()}
    first = split(2000)
    assert first == split(2000)
    share_b = Counter(first.values())["B"] / len(first)
    assert 0.17 < share_b < 0.23, share_b


def test_zero_weight_variant_never_chosen():
    """A variant with weight 0 is kept in the file but never sent."""
    c = camps(camp("ab", variants=[{"name": "A", "weight": 1}, {"name": "off", "weight": 0}]))
    camp0 = c.campaigns[0]
    assert {pick_variant(camp0, camp0.steps[0], f"c{i}").name for i in range(500)} == {"A"}


# -- staleness ----------------------------------------------------------------------------------

def _stale(now_ms: int | None, **kw) -> Rig:
    rig = Rig(camps(camp("em", **kw)), now_ms=now_ms)
    rig.feed(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * H)
    return rig


def test_staleness_guard_live():
    """Live: a change older than the wall clock by more than max_staleness (default 1 h) does not fire."""
    rig = _stale(T0 + 3 * H)
    assert rig.messages() == []
    assert rig.decisions("em")[0].outcome == "skipped_stale"
    assert len(_stale(T0 + H + 30 * M).messages()) == 1


def test_staleness_guard_off_in_replay():
    """Replay (no wall clock): the guard is off, so a replay makes the same decisions whenever it runs."""
    assert len(_stale(None).messages()) == 1


def test_allow_stale_and_no_limit():
    """`allow_stale: true` sends a stale message marked stale; `max_staleness: null` has no guard."""
    [m] = _stale(T0 + 3 * H, allow_stale=True).messages()
    assert m.stale and m.record()["stale"] is True
    [m] = _stale(T0 + 30 * D, max_staleness=None).messages()
    assert not m.stale


# -- templates at send time -----------------------------------------------------------------------

def _rendered(template: dict, fallbacks: dict | None = None, **profile) -> Rig:
    c = camps(camp("em", template=template, fallbacks=fallbacks or {}))
    rig = Rig(c)
    rig.feed(subscribe(rig, "c1", T0, "email", **profile) + [rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * H)
    return rig


def test_template_fallbacks():
    """A missing or empty profile field renders its declared fallback; a present one renders as is."""
    t = {"subject": "Hi {{ contact.first_name }}", "body": "x"}
    fb = {"first_name": "there"}
    assert _rendered(t, fb).messages()[0].subject == "Hi there"
    assert _rendered(t, fb, first_name="").messages()[0].subject == "Hi there"
    assert _rendered(t, fb, first_name="Ana").messages()[0].subject == "Hi Ana"


def test_html_escapes_profile_values():
    """HTML templates escape substituted values; text bodies keep them verbatim."""
    t = {"subject": "s", "body": "{{ contact.first_name }}", "html": "<p>{{ contact.first_name }}</p>"}
    [m] = _rendered(t, {"first_name": "x"}, first_name="<b>Bo</b>").messages()
    assert m.html == "<p>&lt;b&gt;Bo&lt;/b&gt;</p>" and m.body == "<b>Bo</b>"
    assert m.record()["html"] == m.html


def test_data_dependent_template_error_is_a_failed_decision():
    """A template that breaks on this contact's data (no products) is `failed: template_error`, never an exception."""
    rig = _rendered({"subject": "s", "body": "{{ products[0].product_id }}"})
    assert rig.messages() == []
    [d] = rig.decisions("em")
    assert (d.outcome, d.reason) == ("failed", "template_error")


def test_no_address_is_failed():
    """A contact without an address for the channel gets `failed: no_address`."""
    rig = Rig(camps(camp("em")))
    rig.feed([rig.ev("c1", "consent_changed", T0, channel="email", status="subscribed"),
              rig.ev("c1", "email_open", T0 + H)])
    rig.until(T0 + 2 * H)
    [d] = rig.decisions("em")
    assert (d.outcome, d.reason) == ("failed", "no_address")


# -- wiring -----------------------------------------------------------------------------------------

def test_required_keep_and_check():
    """required_keep lists consent channels, template/address/timezone fields and items; a shard without them is refused."""
    c = builtin_campaigns()
    keep = c.required_keep()
    assert keep.consent_channels == ("email", "push", "sms")
    assert set(keep.profile_fields) == {"birthday", "email", "first_name", "phone", "push_token", "timezone"}
    assert keep.items_of == ()  # sequences read the items of their trigger event, not the shard
    shard = Shard(compile_program(list(c.segments)))
    with pytest.raises(ValueError, match="required_keep"):
        CampaignEngine(c).process(shard, [], T0)


def test_builtin_espresso_campaigns_end_to_end():
    """Seed 000: email resend at once, SMS follow-up 2 h later outside quiet hours, push with urgency."""
    rig = Rig(builtin_campaigns(names=("espresso",)))
    rig.feed(subscribe(rig, "c1", T0, "email", "sms", "push", first_name="Ana", timezone="Europe/Paris") + [
        rig.ev("c1", "email_open", T0 + 9 * H),  # 19:00 Paris: the SMS would be due at 21:00 Paris
        rig.ev("c1", "push_open", T0 + 9 * H)])
    rig.until(T0 + 2 * D)
    got = {m.campaign_id: m for m in rig.messages()}
    assert got["email-espresso-resend"].due_at == T0 + 9 * H
    assert got["email-espresso-resend"].variant in ("A", "B")
    assert got["push-espresso-urgent"].data["urgency"] == "high"
    assert got["email-espresso-sms-followup"].due_at == parse_ts("2026-11-21T07:00:00Z")  # 08:00 Paris
    assert got["email-espresso-sms-followup"].body.startswith("Ana, ")


# -- live mode --------------------------------------------------------------------------------------

def test_live_settled_sends_before_the_watermark_passes():
    """Live: once its instant is settled, an entry is decided as soon as its event is in (latency), not when
    the watermark passes it."""
    c = camps(camp("em"))
    rig = Rig(c, now_ms=T0 + H + 200)
    events = subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "email_open", T0 + H)]
    out = rig.feed(events, watermark=T0 + H - 60_000, settled=T0 + H)  # allowed lateness 60 s, caught up
    assert [(type(o).__name__, o.due_at) for o in out] == [("Message", T0 + H)]


def test_late_change_is_decided_at_the_engine_watermark():
    """A change older than the engine's watermark (a live correction) is decided at the watermark, not in the past."""
    c = camps(camp("em"))
    shard = Shard(compile_program(list(c.segments), c.required_keep()))
    engine = CampaignEngine(c)
    rig = Rig(c)
    changes = shard.apply(subscribe(rig, "c1", T0, "email") + [rig.ev("c1", "email_open", T0 + H)]) + shard.flush()
    engine.advance(T0 + 5 * H, shard)
    [m] = engine.on_changes(changes, shard)
    assert m.due_at == T0 + 5 * H


def test_birthday_campaign_added_later_schedules_known_birthdays():
    """A date campaign added to a running deployment fires for contacts whose birthday was set before it existed
    (the shard already kept the field: here a template reads it)."""
    before = campaigns("""
        campaigns:
          - id: em
            trigger: {segment: email-espresso}
            channel: email
            template: {subject: s, body: "{{ contact.birthday | default('') }}"}
        """)
    rig = Rig(before)
    rig.feed(subscribe(rig, "c1", T0, "email", birthday="11-22") + [rig.ev("c1", "email_click", T0 + H)])
    shard_state = pickle.loads(pickle.dumps(rig.shard.snapshot()))
    engine_state = pickle.loads(pickle.dumps(rig.engine.snapshot()))
    after = campaigns("""
        campaigns:
          - id: em
            trigger: {segment: email-espresso}
            channel: email
            template: {subject: s, body: "{{ contact.birthday | default('') }}"}
          - id: bday
            trigger: {date: birthday, at: "09:00"}
            channel: email
            reentry: every_time
            template: {subject: "Happy birthday", body: b}
        """)
    later = Rig(after)
    later.shard = Shard(later.program, 1 << 12, shard_state)
    later.engine = CampaignEngine(after, engine_state)
    later.frontier = T0 + H
    later.until(T0 + 3 * D)
    assert [(m.campaign_id, m.due_at) for m in later.messages("bday")] == [("bday", parse_ts("2026-11-22T09:00:00Z"))]
