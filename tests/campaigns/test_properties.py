"""Random streams through a real Shard + CampaignEngine (Hypothesis).

Streams mix consent flips on every channel, opens, clicks, orders, checkouts and profile
updates (time zones near DST changes, missing names and addresses), on a coarse time grid
so same-millisecond ties and exact window edges are common, with redelivered events. The
policies are checked against the stream itself (an oracle independent of the engine).
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.campaigns import Conversion, Message
from state.campaigns.quiet import is_quiet, zone
from state.events import Event
from state.timeutil import parse_ts
from tests.engine_driver import run_shard

from .helpers import H, M, Rig, campaigns
from .helpers import run as run_all

CAMPAIGNS = campaigns("""
default_timezone: Europe/Paris
segments:
  - id: checkout-open
    when: {abandoned_checkout: {after: 30m, expires_after: 3d}}
caps:
  email: {max: 1, per: 16h}
  sms: {max: 1, per: 72h}
  push: {max: 1, per: 24h}
  all: {max: 2, per: 24h}
campaigns:
  - id: em-now
    trigger: {segment: email-espresso}
    channel: email
    priority: 5
    reentry: every_time
    fallbacks: {first_name: there}
    template: {subject: "s", body: "{{ contact.first_name }}"}
  - id: sms-later
    trigger: {segment: email-espresso}
    channel: sms
    delay: 2h
    caps: defer
    max_defer: 3d
    reentry: {once_per: 1d}
    template: {body: "b"}
  - id: push-now
    trigger: {segment: push-espresso}
    channel: push
    priority: 5
    reentry: once
    variants: [{name: A, weight: 1}, {name: B, weight: 1}]
    template: {subject: t, body: b}
  - id: cart
    trigger: {segment: checkout-open}
    channel: email
    priority: 9
    delay: 3h
    caps: defer
    quiet_hours: {start: "22:00", end: "07:00"}
    reentry: every_time
    template: {subject: s, body: "{% for p in products %}{{ p.product_id }}{% endfor %}"}
  - id: sms-bye
    trigger: {segment: sms-espresso, on: exit}
    channel: sms
    priority: 1
    delay: 1h
    reentry: every_time
    quiet_hours: {start: "20:00", end: "09:30"}
    template: {body: bye}
  - id: push-sms
    trigger: {segment: push-espresso}
    channel: sms
    priority: 5
    caps: defer
    reentry: every_time
    template: {body: x}
""", file="property.yaml")


def run(*args, **kwargs):
    """`helpers.run` without the conversions: orders after sends make `sent` conversions, which
    these properties of runs and policies do not look at (tests/campaigns/test_attribution*.py do)."""
    changes, out = run_all(*args, **kwargs)
    return changes, [o for o in out if not isinstance(o, Conversion)]

ANCHORS = [parse_ts(x) for x in ("2026-10-24T18:00:00Z", "2026-03-07T18:00:00Z", "2026-11-20T09:00:00Z")]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "Bad/Zone"]
TYPES = ["consent_changed"] * 4 + ["email_open", "email_click", "sms_click", "push_open", "order_placed",
                                  "checkout_started", "profile_updated", "app_open"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _props(draw, etype: str) -> dict:
    if etype == "consent_changed":
        return {"channel": draw(st.sampled_from(["email", "sms", "push"])),
                "status": draw(st.sampled_from(["subscribed", "subscribed", "unsubscribed"]))}
    if etype == "profile_updated":
        p = {"timezone": draw(st.sampled_from(ZONES))}
        for key, value in (("first_name", "Ana"), ("email", "a@example.com"), ("phone", "+33600"),
                           ("push_token", "tok")):
            if draw(st.integers(0, 4)):
                p[key] = value
        return p
    if etype in ("order_placed", "checkout_started"):
        return {"items": [{"product_id": draw(st.sampled_from(["cup", "mug"]))}]}
    return {}


@st.composite
def streams(draw, redeliveries: bool = True):
    t0 = draw(st.sampled_from(ANCHORS))
    n = draw(st.integers(1, 60))
    events = []
    for i in range(n):
        etype = draw(st.sampled_from(TYPES))
        ts = t0 + draw(st.integers(0, 240)) * 30 * M
        events.append(Event(f"e{i}", draw(st.sampled_from(["a", "b", "c"])), etype, ts, _props(draw, etype)))
    events.sort(key=lambda e: e.ts)
    if redeliveries:
        for _ in range(draw(st.integers(0, 3))):
            i = draw(st.integers(0, len(events) - 1))
            events.insert(draw(st.integers(i + 1, len(events))), events[i])
    cuts = draw(st.lists(st.integers(1, len(events)), max_size=8))
    until = max(e.ts for e in events) + draw(st.integers(0, 96)) * H
    return events, cuts, until


# -- an oracle reading the stream ------------------------------------------------------

def _unique(events: list[Event]) -> list[Event]:
    seen, out = set(), []
    for e in events:
        if e.event_id not in seen:
            seen.add(e.event_id)
            out.append(e)
    return out


def consent_at(events: list[Event], cid: str, channel: str, t: int) -> str | None:
    """Newest consent for the channel at `t`; at the same ms `unsubscribed` wins."""
    best = None
    for e in events:
        if e.contact_id == cid and e.type == "consent_changed" and e.properties["channel"] == channel and e.ts <= t:
            key = (e.ts, e.properties["status"] == "unsubscribed")
            if best is None or key > best[0]:
                best = (key, e.properties["status"])
    return None if best is None else best[1]


def timezone_at(events: list[Event], cid: str, t: int):
    tz = None
    for e in events:
        if e.contact_id == cid and e.type == "profile_updated" and e.ts <= t and "timezone" in e.properties:
            tz = e.properties["timezone"]
    return zone(tz) or zone(CAMPAIGNS.default_timezone)


def sorted_records(out: list) -> list[tuple]:
    return sorted(tuple(sorted((k, repr(v)) for k, v in o.record().items())) + (type(o).__name__,) for o in out)


# -- properties -------------------------------------------------------------------------

@PROPERTY
@given(streams())
def test_policies_always_hold(case):
    """No send without consent at its instant, unique message ids, one final outcome each, caps and quiet hours kept."""
    events, cuts, until = case
    _, out = run(CAMPAIGNS, events, until, cuts)
    unique = _unique(events)
    msgs = [o for o in out if isinstance(o, Message)]
    ids = [m.message_id for m in msgs]
    assert len(ids) == len(set(ids)), "two messages with one message_id"
    finals = defaultdict(int)
    for o in out:
        if isinstance(o, Message) or o.outcome != "deferred":
            finals[o.message_id] += 1
    assert max(finals.values(), default=0) <= 1, "a message decided twice"
    for m in msgs:
        assert consent_at(unique, m.contact_id, m.channel, m.due_at) == "subscribed", m
        quiet = CAMPAIGNS.by_id[m.campaign_id].quiet
        if quiet is not None:
            assert not is_quiet(m.due_at, timezone_at(unique, m.contact_id, m.due_at), *quiet), m
    by_contact = defaultdict(list)
    for m in msgs:
        by_contact[m.contact_id].append(m)
    for sent in by_contact.values():
        for cap in CAMPAIGNS.caps:
            times = [m.due_at for m in sent if cap.channel in (None, m.channel)]
            for t in times:
                assert sum(1 for s in times if t - cap.per_ms < s <= t) <= cap.max, (cap, times)


@PROPERTY
@given(streams(), st.data())
def test_snapshot_restore_mid_stream_is_invisible(case, data):
    """Restoring shard and engine from pickled snapshots at a batch boundary gives the same output, in order."""
    events, cuts, until = case
    if len(events) < 2:
        return
    at = data.draw(st.lists(st.integers(1, len(events) - 1), min_size=1, max_size=3))
    changes, out = run(CAMPAIGNS, events, until, [*cuts, *at])
    changes2, out2 = run(CAMPAIGNS, events, until, cuts, restore_at=at)
    assert [c.record() for c in changes2] == [c.record() for c in changes]
    assert [o.record() for o in out2] == [o.record() for o in out]


@PROPERTY
@given(streams())
def test_decisions_do_not_depend_on_batching(case):
    """The same stream cut into other batches gives the same decisions and messages (replay is deterministic)."""
    events, cuts, until = case
    _, whole = run(CAMPAIGNS, events, until)
    _, cut = run(CAMPAIGNS, events, until, cuts)
    _, single = run(CAMPAIGNS, events, until, range(1, len(events)))
    assert sorted_records(cut) == sorted_records(whole) == sorted_records(single)


@PROPERTY
@given(streams())
def test_segment_changes_unchanged_by_campaigns(case):
    """`process` emits exactly the changes the shard alone gives for the same batches."""
    events, cuts, until = case
    changes, _ = run(CAMPAIGNS, events, until, cuts)
    program = Rig(CAMPAIGNS).program
    plain = run_shard(program, events, until, cuts, horizon=1 << 12)
    key = lambda c: (c.contact_id, c.seq)  # noqa: E731
    assert [c.record() for c in sorted(changes, key=key)] == [c.record() for c in sorted(plain, key=key)]
