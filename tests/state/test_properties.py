"""The engine against the brute-force oracle on random streams (Hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.conditions import (
    Abandoned, All, AnyOf, Consent, EventCount, Filter, Inactive, Lifetime, Not, Profile,
    Segment, Selector,
)
from state.definitions import builtin_segments
from state.events import Event
from state.program import compile_program
from tests.engine_driver import as_tuples, run_shard
from tests.oracle import expected_changes

H = 3_600_000
T0 = 1_795_000_000_000  # 2026-11-18T...
CONSENT_REASONS = [None, "double_opt_in", "import"]

settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def _props(draw, etype: str) -> dict:
    if etype == "consent_changed":
        return {"channel": draw(st.sampled_from(["email", "sms", "push"])),
                "status": draw(st.sampled_from(["subscribed", "subscribed", "unsubscribed"])),
                "reason": draw(st.sampled_from(CONSENT_REASONS))}
    if etype == "profile_updated":
        return {"country": draw(st.sampled_from(["FR", "BE", "DE"]))}
    if etype in ("order_placed", "checkout_started"):
        return {"value": draw(st.sampled_from([10, 25.5, 100])),
                "items": [{"product_id": "p1", "collection_ids": [draw(st.sampled_from(["dogs", "cats"]))]}]}
    return {"tag": draw(st.sampled_from(["x", "y"]))}


@st.composite
def streams(draw, types: list[str], hours: int, step_ms: int = H):
    """In-order streams on a coarse grid, so same-ms ties and exact window edges are common."""
    n = draw(st.integers(1, 40))
    events = []
    for i in range(n):
        etype = draw(st.sampled_from(types))
        ts = T0 + draw(st.integers(0, hours)) * step_ms
        events.append(Event(f"e{i}", draw(st.sampled_from(["a", "b", "c"])), etype, ts, _props(draw, etype)))
    events.sort(key=lambda e: e.ts)  # stable: arrival order among same-ms events is random
    # Redeliveries: copies of earlier events later in the stream (they must be ignored).
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(events) - 1))
        j = draw(st.integers(i + 1, len(events)))
        events.insert(j, events[i])
    cuts = draw(st.lists(st.integers(1, len(events)), max_size=6))
    until = max(e.ts for e in events) + draw(st.integers(0, hours)) * step_ms
    return events, cuts, until


BUILTIN_TYPES = ["email_open", "email_click", "order_placed", "consent_changed", "sms_click",
                 "push_open", "app_open", "profile_updated"]


@given(streams(BUILTIN_TYPES, 160))
def test_builtin_segments_match_brute_force(case):
    """Every enter/exit of the espresso segments is emitted at the exact instant, none extra."""
    events, cuts, until = case
    segments = builtin_segments()
    program = compile_program(segments)
    got = run_shard(program, events, until, cuts)
    assert as_tuples(got) == expected_changes(segments, events, until, program.reasons)
    assert not any(c.late for c in got), "in-order input never yields corrections"


@given(streams(BUILTIN_TYPES, 160))
def test_sequence_numbers_and_expiry(case):
    """Per contact, `seq` counts 1, 2, 3...; an enter's `expires_at` is its exit if nothing else happened."""
    events, cuts, until = case
    program = compile_program(builtin_segments())
    got = run_shard(program, events, until, cuts)
    by_contact: dict[str, list] = {}
    for c in got:
        by_contact.setdefault(c.contact_id, []).append(c)
    for changes in by_contact.values():
        assert sorted(c.seq for c in changes) == list(range(1, len(changes) + 1))
    for c in got:
        if c.direction == "enter" and c.expires_at is not None:
            assert c.expires_at > c.at
            exit_ = next((x for x in got if x.contact_id == c.contact_id and x.segment_id == c.segment_id
                          and x.direction == "exit" and x.at > c.at), None)
            later = [e for e in events if e.contact_id == c.contact_id and c.at < e.ts <= c.expires_at]
            if not later and exit_ is not None:
                assert exit_.at == c.expires_at


@given(streams(BUILTIN_TYPES, 160), st.sampled_from([1, 7, 64]))
def test_batching_does_not_change_results(case, batch):
    """Same input, same changes (and order) whatever the batch size, for a given cut set."""
    events, _, until = case
    program = compile_program(builtin_segments())
    a = run_shard(program, events, until, list(range(batch, len(events), batch)))
    b = run_shard(program, events, until, [])
    assert as_tuples(a) == as_tuples(b)


# -- custom definitions from the language -----------------------------------------------

CUSTOM_TYPES = ["a_open", "b_click", "order_placed", "checkout_started", "consent_changed", "profile_updated"]


def _selector(draw, etype):
    if draw(st.booleans()):
        if etype in ("order_placed", "checkout_started"):
            return Selector(etype, (Filter(("items", "collection_ids"), "contains", "dogs"),))
        return Selector(etype, (Filter(("tag",), "equals", "x"),))
    return Selector(etype)


@st.composite
def leaves(draw):
    kind = draw(st.sampled_from(["count", "count", "consent", "lifetime", "inactive", "abandoned", "profile"]))
    if kind == "count":
        etype = draw(st.sampled_from(["a_open", "b_click", "order_placed"]))
        return EventCount(_selector(draw, etype), draw(st.sampled_from([2, 3, 5])) * H,
                          draw(st.sampled_from(["at_least", "at_most", "exactly"])), draw(st.integers(0, 2)))
    if kind == "consent":
        reasons = draw(st.sampled_from([None, ("double_opt_in",), ("double_opt_in", "import")]))
        return Consent(draw(st.sampled_from(["email", "sms"])), reasons)
    if kind == "lifetime":
        if draw(st.booleans()):
            return Lifetime(_selector(draw, "order_placed"), "count", None,
                            draw(st.sampled_from([">", "<", "=", ">=", "<="])), float(draw(st.integers(0, 2))))
        return Lifetime(Selector("order_placed"), "sum", ("value",), draw(st.sampled_from([">", "<"])), 30.0)
    if kind == "inactive":
        return Inactive(_selector(draw, "order_placed"), draw(st.sampled_from([2, 4])) * H, draw(st.booleans()))
    if kind == "abandoned":
        return Abandoned(Selector("checkout_started"), Selector("order_placed"), 2 * H,
                         draw(st.sampled_from([None, 5 * H])))
    return Profile("country", draw(st.sampled_from(["equals", "in", "exists"])),
                   draw(st.sampled_from(["FR", ["FR", "BE"]])))


def conditions(max_depth=3):
    return st.recursive(
        leaves(),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: All(tuple(xs))),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: AnyOf(tuple(xs))),
            inner.map(Not)),
        max_leaves=6)


def _fix_profile(c):
    """`in` needs a list and `equals` a scalar: keep generated profile leaves well-formed."""
    if isinstance(c, Profile):
        if c.op == "in" and not isinstance(c.value, list):
            return Profile(c.field, "in", [c.value])
        if c.op == "equals" and isinstance(c.value, list):
            return Profile(c.field, "equals", c.value[0])
        return c
    if isinstance(c, All):
        return All(tuple(map(_fix_profile, c.items)))
    if isinstance(c, AnyOf):
        return AnyOf(tuple(map(_fix_profile, c.items)))
    if isinstance(c, Not):
        return Not(_fix_profile(c.item))
    return c


@settings(max_examples=400)
@given(st.lists(conditions(), min_size=1, max_size=3), streams(CUSTOM_TYPES, 30))
def test_custom_definitions_match_brute_force(conds, case):
    """Any definition of the language: engine output equals evaluation at every instant."""
    events, cuts, until = case
    segments = [Segment(f"s{i}", _fix_profile(c)) for i, c in enumerate(conds)]
    program = compile_program(segments)
    got = run_shard(program, events, until, cuts)
    assert as_tuples(got) == expected_changes(segments, events, until, program.reasons)
