"""Backfilling facts a kept state lacks (state/backfill.py): after the fill, a segment that was
refused switches in, and from the switch on writes what a shard built with the new
definitions from the very start writes, including for contacts only the history knew."""

from __future__ import annotations

import pickle
import random

import pytest
import yaml

from state.backfill import UNBOUNDED, fill_facts, lookback_ms, missing_facts
from state.definitions import builtin_segments, parse_segments
from state.events import Event
from state.migrate import DefinitionChangeRefused
from state.program import compile_program
from state.shard import Shard
from tests.state import driving

H = 3_600_000
D = 24 * H
T0 = 1_795_000_000_000

NEW = """
segments:
  - id: big-spender
    when: {lifetime: {type: order_placed, aggregate: sum, property: value, op: '>=', value: 300}}
  - id: browsing
    when: {event: {type: product_viewed, at_least: 2, within: 2d}}
  - id: clicked-twice
    when: {event: {type: email_click, at_least: 2, within: 3d}}
"""
NEW_IDS = {"big-spender", "browsing", "clicked-twice"}


def new_program():
    return compile_program(builtin_segments() + parse_segments(yaml.safe_load(NEW), "new.yaml"))


def stream(seed: int, n: int = 4000, contacts: int = 80) -> list[Event]:
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        cid = f"c{rnd.randrange(contacts)}"
        etype = rnd.choice(["email_open", "email_click", "email_click", "order_placed", "product_viewed",
                            "product_viewed", "consent_changed"])
        props: dict = {}
        if etype == "order_placed":
            props = {"value": rnd.choice([20, 49.5, 120, 250])}
        elif etype == "consent_changed":
            props = {"channel": "email", "status": rnd.choice(["subscribed", "subscribed", "unsubscribed"])}
        ts = T0 + k * 60_000 + rnd.randrange(30_000)
        if rnd.random() < 0.05:  # same millisecond as the one before
            ts = out[-1].ts if out else ts
        out.append(Event(f"e{k}", cid, etype, ts, props))
    out.sort(key=lambda e: e.ts)
    return out


def split(events: list[Event], at: int) -> int:
    """An index near `at` that does not cut the events of one millisecond."""
    while events[at].ts == events[at - 1].ts:
        at += 1
    return at


def drive(shard: Shard, events: list[Event], step: int = 150) -> list:
    return driving.drive(shard, events, step)


def built(events: list[Event], cut: int) -> tuple[Shard, int]:
    """A shard of the built-in segments that has read `events[:cut]`, and the instant after."""
    first = Shard(compile_program(builtin_segments()))
    drive(first, events[:cut])
    at = events[cut - 1].ts + 1
    first.advance(at)
    return first, at


def key(c):
    return (c.contact_id, c.segment_id, c.direction, c.at)


def test_without_backfill_the_new_segments_are_refused():
    shard = Shard(compile_program(builtin_segments()))
    drive(shard, stream(1, 500))
    with pytest.raises(DefinitionChangeRefused):
        Shard(new_program(), state=shard.snapshot())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_filled_from_the_whole_history_the_new_segments_follow_the_new_definitions(seed):
    events = stream(seed)
    cut = split(events, len(events) // 2)
    first, at = built(events, cut)
    program = new_program()
    state, report = fill_facts(pickle.loads(pickle.dumps(first.snapshot())), program, events[:cut], cutoff=at)
    assert report.applied == cut and report.added == 0 and report.after_cutoff == 0
    assert len(report.facts) == 3  # the sum, the views, and a deeper ring of clicks
    switched = Shard(program, state=pickle.loads(pickle.dumps(state)), switch_at=at)
    assert set(switched.migration.rebuilt) == NEW_IDS and not switched.migration.refused
    reference = Shard(program)
    drive(reference, events[:cut])
    reference.advance(at)
    for cid in reference.index:  # every contact where the new definitions from the start have it
        assert reference.I[0][reference.row_of(cid)] == switched.I[0][switched.row_of(cid)], cid
    entered = {(c.contact_id, c.segment_id) for c in switched.migrated}
    assert {sid for _, sid in entered} == NEW_IDS  # each new segment had members to announce
    later = events[cut:]
    end = later[-1].ts + 10 * D
    got = drive(switched, later) + switched.advance(end)
    want = drive(reference, later) + reference.advance(end)
    assert [key(c) for c in got] == [key(c) for c in want]
    assert sum(c.segment_id in NEW_IDS for c in want) > 50


def test_contacts_only_the_history_knows_are_added_with_the_new_facts():
    """The input lost its first half (retention); the archive has it all. For the new segments,
    which read only facts the fill builds, every contact matches a shard built from the start."""
    events = stream(4, contacts=400)
    lost, cut = split(events, len(events) // 3), split(events, 2 * len(events) // 3)
    first = Shard(compile_program(builtin_segments()))
    drive(first, events[lost:cut])
    at = events[cut - 1].ts + 1
    first.advance(at)
    program = new_program()
    state, report = fill_facts(first.snapshot(), program, events[:cut], cutoff=at, adopt=lambda cid: True)
    assert report.added > 10  # contacts seen only before the input's retention
    switched = Shard(program, state=state, switch_at=at)
    reference = Shard(program)
    drive(reference, events[:cut])
    reference.advance(at)
    positions = {s.id: i for i, s in enumerate(program.segments)}
    for cid in reference.index:
        r, s = reference.row_of(cid), switched.row_of(cid)
        for sid in NEW_IDS:
            i = positions[sid]
            assert (reference.I[0][r] >> i & 1) == (switched.I[0][s] >> i & 1), (cid, sid)
    later = events[cut:]
    end = later[-1].ts + 10 * D
    # contacts are in other rows, so changes of one instant may come in another order
    got = sorted(key(c) for c in drive(switched, later) + switched.advance(end) if c.segment_id in NEW_IDS)
    want = sorted(key(c) for c in drive(reference, later) + reference.advance(end) if c.segment_id in NEW_IDS)
    assert got == want and len(want) > 50


def test_only_what_the_state_has_read_is_taken_from_the_history():
    """Events after what the input had read come from the input after the restart: filling them too
    would count them twice."""
    events = stream(5)
    cut = split(events, len(events) // 2)
    first, at = built(events, cut)
    program = new_program()
    state, report = fill_facts(first.snapshot(), program, events, cutoff=at)  # the archive runs ahead
    assert report.after_cutoff == len(events) - cut
    switched = Shard(program, state=state, switch_at=at)
    reference = Shard(program)
    drive(reference, events[:cut])
    reference.advance(at)
    got = drive(switched, events[cut:]) + switched.advance(events[-1].ts + 10 * D)
    want = drive(reference, events[cut:]) + reference.advance(events[-1].ts + 10 * D)
    assert [key(c) for c in got] == [key(c) for c in want]


def test_kept_facts_memberships_and_timers_are_untouched():
    events = stream(6, 1500)
    first = Shard(compile_program(builtin_segments()))
    drive(first, events)
    before = first.snapshot()
    state, _ = fill_facts(before, new_program(), events, cutoff=events[-1].ts)
    for col, values in enumerate(before.ints):
        assert list(state.ints[col]) == list(values)
    assert state.segments == before.segments and state.fingerprint == before.fingerprint
    assert not missing_facts(state.facts, new_program())


def test_lookback_is_the_longest_window_or_the_whole_history():
    program = new_program()
    segs = list(program.segments)
    missing = missing_facts(compile_program(builtin_segments()).facts, program)
    views = [k for k in missing if "product_viewed" in k]
    assert lookback_ms(segs, views) == 2 * D
    assert lookback_ms(segs, [k for k in missing if k.startswith("sum:")]) == UNBOUNDED
    assert lookback_ms(segs, []) == 0


def test_the_old_definitions_may_still_start_on_a_backfilled_state():
    """The built facts are dropped again (switching to the new definitions later needs a new backfill)."""
    events = stream(7, 1500)
    cut = split(events, 1000)
    old = compile_program(builtin_segments())
    first = Shard(old)
    drive(first, events[:cut])
    at = events[cut - 1].ts + 1
    filled, _ = fill_facts(first.snapshot(), new_program(), events[:cut], cutoff=at)
    back = Shard(compile_program(builtin_segments()), state=filled)
    assert back.migration is None and len(back.I) == old.ints
    drive(back, events[cut:])  # new contacts too: every column grows alike
    assert len({len(c) for c in back.I}) == 1
    with pytest.raises(DefinitionChangeRefused):
        Shard(new_program(), state=pickle.loads(pickle.dumps(back.snapshot())))


def test_a_consent_fact_is_filled_with_the_states_reason_numbers():
    """Consent codes carry reason numbers; the fill builds them with a program of its own."""
    old_text = """
segments:
  - id: email-kept
    when: {consent: {channel: email, reasons: [double_opt_in, checkout]}}
"""
    new_text = old_text + """
  - id: sms-by-checkout
    when: {consent: {channel: sms, reasons: [checkout]}}
"""
    old = compile_program(parse_segments(yaml.safe_load(old_text), "old.yaml"))
    new = compile_program(parse_segments(yaml.safe_load(new_text), "new.yaml"))
    rnd = random.Random(11)
    events = [Event(f"e{k}", f"c{rnd.randrange(40)}", "consent_changed", T0 + k * 1000,
                    {"channel": rnd.choice(["email", "sms"]), "status": rnd.choice(["subscribed", "unsubscribed"]),
                     "reason": rnd.choice(["double_opt_in", "checkout"])}) for k in range(600)]
    first = Shard(old)
    drive(first, events)
    at = events[-1].ts + 1
    first.advance(at)
    state, report = fill_facts(first.snapshot(), new, events, cutoff=at)
    assert report.facts == ["consent:sms"]
    switched = Shard(new, state=state, switch_at=at)
    reference = Shard(new)
    drive(reference, events)
    reference.advance(at)
    assert sum(reference.I[0][r] >> 1 & 1 for r in range(len(reference))) > 5
    for cid in reference.index:
        assert reference.I[0][reference.row_of(cid)] == switched.I[0][switched.row_of(cid)], cid
