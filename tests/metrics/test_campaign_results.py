"""Campaign results as metrics: released, held out, delivered, opened, clicked, converted and
revenue per campaign, variant and step, and ignored touches; labels bounded by the loaded
campaigns, never a contact id."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml
from prometheus_client import CollectorRegistry

from flows.deliver import _Observed
from flows.observe import ShardObserver
from connectors.sender import decision_record
from metrics.labels import OTHER
from metrics.registry import MAX_STEPS, MAX_VARIANTS, EspressoMetrics
from state.campaigns import CampaignEngine, Conversion, Decision, Message, parse_campaigns
from state.events import Event
from state.program import compile_program
from state.shard import Shard
from state.timeutil import parse_ts

M, H = 60_000, 3_600_000
T0 = parse_ts("2026-11-20T09:00:00Z")

CAMPAIGNS = """
caps: {email: null, sms: null, push: null, all: null}
campaigns:
  - id: nudge
    trigger: {event: product_viewed}
    reentry: every_time
    channel: email
    variants: [{name: A, weight: 1}, {name: B, weight: 1}]
    template: {subject: s, body: b}
  - id: series
    trigger: {event: checkout_started}
    channel: email
    steps:
      - {id: first, after: 0s, template: {subject: s, body: b}}
      - {id: second, after: 1h, template: {subject: s, body: b}}
  - id: control
    trigger: {event: added_to_cart}
    channel: push
    holdout: 50%
    template: {subject: s, body: b}
"""
CONTACTS = [f"contact-{i:03d}" for i in range(40)]


class Flow:
    """A shard and its engine driven like the live flow's `ShardLogic`, observed by a
    `ShardObserver` recording on a fresh registry."""

    def __init__(self) -> None:
        self.camps = parse_campaigns(yaml.safe_load(CAMPAIGNS), "test.yaml", text=CAMPAIGNS)
        self.shard = Shard(compile_program(list(self.camps.segments), self.camps.required_keep()), 1 << 12)
        self.engine = CampaignEngine(self.camps)
        self.registry = CollectorRegistry()
        self.metrics = EspressoMetrics(self.registry, version="test")
        self.observer = ShardObserver(self.shard, self.metrics, self.engine)
        self.out: list = []
        self.frontier = T0
        self.n = 0

    def ev(self, cid: str, etype: str, ts: int, **props) -> Event:
        self.n += 1
        return Event(f"e{self.n}", cid, etype, ts, props)

    def feed(self, events: list[Event], until: int | None = None) -> list:
        if events:
            self.frontier = max(self.frontier, max(e.ts for e in events))
        wm = self.frontier if until is None else until + 1
        _, out = self.engine.process(self.shard, events, wm, now_ms=None, settled=until)
        self.observer.count_outputs(out)
        self.observer.report(self.shard, wm)
        self.out += out
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def samples(self, family: str) -> dict[tuple, float]:
        return {tuple(sorted(s.labels.items())): s.value for f in self.registry.collect() if f.name == family
                for s in f.samples if s.name == family + "_total"}


def _subscribe(flow: Flow, cid: str) -> list[Event]:
    return [flow.ev(cid, "profile_updated", T0, email=f"{cid}@example.com", push_token=f"tok-{cid}"),
            flow.ev(cid, "consent_changed", T0, channel="email", status="subscribed"),
            flow.ev(cid, "consent_changed", T0, channel="push", status="subscribed")]


@pytest.fixture(scope="module")
def flow() -> Flow:
    """Every contact triggers the three campaigns; the messages released get touched (the A/B
    test's by a click, the series' first step by an open and a proxy's open, the push by an
    open), touches naming no message of theirs come in, and every contact orders twice."""
    f = Flow()
    evs = []
    for cid in CONTACTS:
        evs += _subscribe(f, cid)
        evs += [f.ev(cid, "product_viewed", T0 + M, product_id="p"), f.ev(cid, "checkout_started", T0 + M),
                f.ev(cid, "added_to_cart", T0 + M, product_id="p")]
    f.feed(evs)
    f.feed([], until=T0 + 2 * H)
    touches = []
    released = [o for o in f.out if isinstance(o, Message)]
    for m in released:
        if m.campaign_id == "nudge":
            touches.append(f.ev(m.contact_id, "email_click", T0 + 3 * H, message_id=m.message_id))
        elif m.step_id == "first":
            touches += [f.ev(m.contact_id, "email_open", T0 + 3 * H, message_id=m.message_id, machine_open=True),
                        f.ev(m.contact_id, "email_open", T0 + 3 * H + 1, message_id=m.message_id)]
        elif m.campaign_id == "control":
            touches.append(f.ev(m.contact_id, "push_open", T0 + 3 * H, message_id=m.message_id))
    other = {CONTACTS[i]: CONTACTS[i - 1] for i in range(len(CONTACTS))}
    nudges = {m.contact_id: m.message_id for m in released if m.campaign_id == "nudge"}
    for cid in CONTACTS[:5]:  # someone else's message, and one never sent
        touches += [f.ev(cid, "email_click", T0 + 3 * H, message_id=nudges[other[cid]]),
                    f.ev(cid, "email_click", T0 + 3 * H, message_id="f" * 32)]
    orders = [f.ev(cid, "order_placed", T0 + 4 * H + k, order_id=f"o-{cid}-{k}", value=10.0 + k, currency="EUR")
              for cid in CONTACTS for k in range(2)]
    f.feed(touches)
    f.feed(orders, until=T0 + 5 * H)
    return f


def test_releases_and_holdouts_are_counted_per_campaign_variant_and_step(flow):
    """espresso_campaign_released{campaign, variant, step} counts the Message records (variant
    "" without A/B test, step "" in a one-message campaign); held_out{campaign, step} the
    held_out decisions; espresso_messages keeps counting both as decisions."""
    released = Counter((m.campaign_id, m.variant or "", m.step_id or "") for m in flow.out if isinstance(m, Message))
    held = Counter((d.campaign_id, d.step_id or "") for d in flow.out
                   if isinstance(d, Decision) and d.outcome == "held_out")
    assert {k[0] for k in released} == {"nudge", "series", "control"}
    assert released[("series", "", "first")] == released[("series", "", "second")] == len(CONTACTS)
    assert released[("nudge", "A", "")] > 0 and released[("nudge", "B", "")] > 0
    assert held[("control", "")] > 0 and released[("control", "", "")] > 0
    got = {(d["campaign"], d["variant"], d["step"]): v
           for k, v in flow.samples("espresso_campaign_released").items() for d in [dict(k)] if v}
    assert got == dict(released)
    assert flow.value("espresso_campaign_held_out_total", campaign="control", step="") == held[("control", "")]
    assert flow.value("espresso_messages_total", campaign="control", channel="push", outcome="held_out") == \
        held[("control", "")]
    assert flow.value("espresso_messages_total", campaign="nudge", channel="email", outcome="sent") == \
        released[("nudge", "A", "")] + released[("nudge", "B", "")]


def test_accepted_touches_are_opened_and_clicked_ignored_ones_counted_by_reason(flow):
    """Touches the engine attributed to a released message count per campaign, variant and
    step (open or click); a proxy's open is `machine`, another contact's or an unknown
    message `unknown` (the engine's own counts)."""
    released = Counter((m.campaign_id, m.variant or "", m.step_id or "") for m in flow.out if isinstance(m, Message))
    for variant in ("A", "B"):
        assert flow.value("espresso_campaign_clicked_total", campaign="nudge", variant=variant, step="") == \
            released[("nudge", variant, "")]
        assert flow.value("espresso_campaign_opened_total", campaign="nudge", variant=variant, step="") == 0
    assert flow.value("espresso_campaign_opened_total", campaign="series", variant="", step="first") == len(CONTACTS)
    assert flow.value("espresso_campaign_opened_total", campaign="series", variant="", step="second") == 0
    assert flow.value("espresso_campaign_opened_total", campaign="control", variant="", step="") == \
        released[("control", "", "")]
    assert flow.engine.stats["touches_machine"] == len(CONTACTS) and flow.engine.stats["touches_unknown"] == 10
    assert flow.value("espresso_touches_ignored_total", reason="machine") == len(CONTACTS)
    assert flow.value("espresso_touches_ignored_total", reason="unknown") == 10
    assert flow.engine.touch_counts == {}  # drained by every report


def test_conversions_and_revenue_per_variant_step_and_group(flow):
    """espresso_conversions / espresso_conversion_revenue{campaign, variant, step, group} add
    up the Conversion records; holdout conversions have variant ""."""
    convs = [c for c in flow.out if isinstance(c, Conversion)]
    assert {c.group for c in convs} == {"message", "sent", "holdout"}
    want_n, want_value = Counter(), Counter()
    for c in convs:
        key = (c.campaign_id, c.variant or "", c.step_id or "", c.group)
        want_n[key] += 1
        want_value[key] += c.value
    got_n = {(d["campaign"], d["variant"], d["step"], d["group"]): v
             for k, v in flow.samples("espresso_conversions").items() for d in [dict(k)] if v}
    got_value = {(d["campaign"], d["variant"], d["step"], d["group"]): v
                 for k, v in flow.samples("espresso_conversion_revenue").items() for d in [dict(k)] if v}
    assert got_n == dict(want_n)
    assert got_value == pytest.approx(dict(want_value))
    assert any(k[3] == "holdout" and k[1] == "" for k in got_n)


def test_series_of_the_loaded_campaigns_exist_at_zero_from_the_start():
    """Before any event: every (campaign, variant, step) of the file has released, opened,
    clicked and message-conversion series at 0; holdout series only for the holdout campaign;
    both ignored-touch reasons."""
    f = Flow()
    arms = {(d["campaign"], d["variant"], d["step"]) for d in map(dict, f.samples("espresso_campaign_released"))}
    assert arms == {("nudge", "A", ""), ("nudge", "B", ""), ("series", "", "first"), ("series", "", "second"),
                    ("control", "", "")}
    for family in ("espresso_campaign_opened", "espresso_campaign_clicked"):
        assert {(d["campaign"], d["variant"], d["step"]) for d in map(dict, f.samples(family))} == arms
    groups = {(d["campaign"], d["group"]) for d in map(dict, f.samples("espresso_conversions"))}
    assert ("control", "holdout") in groups and ("nudge", "holdout") not in groups
    assert set(f.samples("espresso_campaign_held_out")) == {(("campaign", "control"), ("step", ""))}
    assert {dict(k)["reason"] for k in f.samples("espresso_touches_ignored")} == {"unknown", "machine"}
    assert all(v == 0 for fam in ("espresso_campaign_released", "espresso_conversions", "espresso_campaign_held_out")
               for v in f.samples(fam).values())


def test_no_contact_id_is_ever_a_label_value(flow):
    """Whatever the traffic, label values come from the configuration and fixed vocabularies."""
    values = {v for fam in flow.registry.collect() for s in fam.samples for v in s.labels.values()}
    assert values, "no samples"
    assert not values & set(CONTACTS)
    assert not any("@" in v or v.startswith("o-") for v in values)


def test_deliver_counts_deliveries_of_each_variant_and_step():
    """`espresso deliver`'s decision records carry the message's variant and step_id; a `sent`
    one counts espresso_campaign_delivered{campaign, variant, step}, other outcomes do not.
    Records are written at once; the counts are published before deliver commits (`publish`)."""
    reg = CollectorRegistry()
    m = EspressoMetrics(reg, version="test")
    written = []
    observed = _Observed(written.append, m)
    on_result = observed.on_result
    msg = {"message_id": "a" * 32, "campaign_id": "series", "channel": "email", "contact_id": "contact-1",
           "variant": "B", "step_id": "second"}
    on_result(decision_record(msg, "sent", latency_ms=12.0))
    on_result(decision_record(msg, "skipped_duplicate"))
    on_result(decision_record({**msg, "variant": None, "step_id": None}, "sent"))
    on_result(decision_record({**msg, "variant": 7, "step_id": ["x"]}, "failed", "http_500"))
    assert [(d["variant"], d["step_id"]) for d in written] == [("B", "second"), ("B", "second"), (None, None),
                                                               (7, ["x"])]
    get = reg.get_sample_value
    assert get("espresso_messages_total", {"campaign": "series", "channel": "email", "outcome": "sent"}) is None
    observed.publish()
    assert get("espresso_campaign_delivered_total", {"campaign": "series", "variant": "B", "step": "second"}) == 1
    assert get("espresso_campaign_delivered_total", {"campaign": "series", "variant": "", "step": ""}) == 1
    assert get("espresso_messages_total", {"campaign": "series", "channel": "email", "outcome": "sent"}) == 2
    assert get("espresso_send_duration_seconds_count", {"channel": "email"}) == 1


def test_undeclared_variants_and_steps_stay_bounded():
    """In `espresso deliver` nothing is declared: variant names and step ids are admitted first
    come up to MAX_VARIANTS / MAX_STEPS, then `other`; declared ones never fall into it."""
    reg = CollectorRegistry()
    m = EspressoMetrics(reg, version="test")
    m.declare_campaign_results([("nudge", "A", None)])
    for i in range(500):
        m.on_delivered("nudge", f"v{i}", f"s{i}")
        m.on_released("nudge", f"v{i}", f"s{i}")
        m.on_touch("nudge", f"v{i}", f"s{i}", "click")
        m.on_conversion("nudge", "message", 1.0, f"v{i}", f"s{i}")
        m.on_touch_ignored(f"r{i}")
    m.on_released("nudge", "A", None)
    fams = {f.name: f for f in reg.collect()}
    variants = {s.labels["variant"] for s in fams["espresso_campaign_delivered"].samples}
    steps = {s.labels["step"] for s in fams["espresso_campaign_delivered"].samples}
    assert len(variants - {"A", ""}) == MAX_VARIANTS + 1 and OTHER in variants
    assert len(steps - {""}) == MAX_STEPS + 1 and OTHER in steps
    assert reg.get_sample_value("espresso_campaign_released_total", {"campaign": "nudge", "variant": "A",
                                                                      "step": ""}) == 1
    assert {s.labels["reason"] for s in fams["espresso_touches_ignored"].samples} == {"unknown", "machine", OTHER}
