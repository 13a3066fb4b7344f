"""`state.align.Aligner`: a shard's contact events merged with the catalogue in event time.

The contract (SPEC "Catalog triggers"; state/align.py): whatever the order in which the
contact batches and the batches of each catalogue partition arrive, each with its settled
bound, the released sequence is the event-time merge (contact events before the updates
of their millisecond), nothing is released before every event that may precede it has been
read, and everything is released as soon as that is known. Snapshot/restore changes nothing.

The reference below is brute force: the merge of everything read so far, cut at the first
event not yet settled.
"""

from __future__ import annotations

import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.align import Aligner
from state.catalog import catalog_event
from state.events import Event
from state.timeutil import MAX_TS, NEVER

PARTS = ("c0", "c1", "c2")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def contact(i: int, ts: int) -> Event:
    return Event(f"e{i}", "a", "product_viewed", ts, {"product_id": "p1"})


def update(part: str, i: int, ts: int) -> Event:
    return catalog_event(f"{part}-u{i}", "p1", ts, {"price": 1})


def is_update(ev: Event) -> bool:
    return ev[1] == ""


def merge(contacts: list[Event], updates: list[Event]) -> list[Event]:
    """Contact events in arrival order, updates by time (arrival order at the same ms), the
    updates of a millisecond after its contact events."""
    out = list(contacts)
    for u in sorted(updates, key=lambda e: e.ts):  # stable
        k = len(out)
        while k > 0 and (out[k - 1].ts > u.ts):
            k -= 1
        out.insert(k, u)
    return out


def settled_prefix(merged: list[Event], contact_settled: int, catalog_settled: int) -> list[Event]:
    """The longest prefix whose every event may go: a contact event at `e` once every update
    before `e` has been read, an update at `c` once every contact event at or before `c` and
    every update before `c` (on any partition) have."""
    out = []
    for ev in merged:
        if ev.ts - 1 > catalog_settled or (is_update(ev) and ev.ts > contact_settled):
            break
        out.append(ev)
    return out


@st.composite
def batches(draw, events: list[Event], shuffle: bool) -> list[tuple[list[Event], int]]:
    """`events` (in time order) cut in batches, each with a settled bound: every event at or
    before it is in this batch or an earlier one; a bound never goes back. A catalogue
    partition (`shuffle`: in any order within a batch) is read in time order: its bound is
    its frontier as far as the next batch allows (contact bounds may lag)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(events))), max_size=4))))
    bounds = [0, *[c for c in cuts if c < len(events)], len(events)]
    out, settled = [], -1
    for lo, hi in zip(bounds, bounds[1:]):
        nxt = events[hi].ts if hi < len(events) else 40
        low = max(settled, min(events[hi - 1].ts, nxt - 1)) if shuffle and hi > lo else settled
        settled = max(settled, draw(st.integers(low, nxt - 1)) if nxt - 1 >= low else low)
        chunk = events[lo:hi]
        if shuffle:
            chunk = draw(st.permutations(chunk))
        out.append((list(chunk), settled))
    if draw(st.booleans()):  # an idle poll: no events, the bound moves on
        out.append(([], max(settled, draw(st.integers(0, 40)))))
    return out


@st.composite
def arrivals(draw, partitions: tuple[int, int] = (0, 3)):
    parts = PARTS[:draw(st.integers(*partitions))]
    stamps = st.lists(st.integers(0, 12), max_size=12).map(sorted)
    contacts = [contact(i, ts) for i, ts in enumerate(draw(stamps))]
    queues: dict[str, list] = {"contacts": draw(batches(contacts, False))}
    for p in parts:
        ups = [update(p, i, ts) for i, ts in enumerate(draw(st.lists(st.integers(0, 12), max_size=8).map(sorted)))]
        queues[p] = draw(batches(ups, True))
    steps = []
    while any(queues.values()):
        src = draw(st.sampled_from(sorted(k for k, q in queues.items() if q)))
        steps.append((src, *queues[src].pop(0), draw(st.integers(0, 5)) == 0))
    return parts, steps


@PROPERTY
@given(arrivals())
def test_released_sequence_is_the_event_time_merge(case):
    """Any number of catalogue partitions: see test_updates_of_two_partitions_keep_time_order
    for what this found."""
    check(*case)


@PROPERTY
@given(arrivals((0, 1)))
def test_released_sequence_is_the_event_time_merge_with_one_partition(case):
    check(*case)


def check(parts: tuple[str, ...], steps: list) -> None:
    al = Aligner(parts)
    read_contacts: list[Event] = []
    read_updates: list[Event] = []
    settled = {p: NEVER for p in parts}
    cs = NEVER
    released: list[Event] = []
    for src, events, bound, restore in steps:
        if src == "contacts":
            al.add_contacts(events)
            read_contacts += events
            cs = bound
        else:
            al.add_catalog(src, events, bound)
            read_updates += events
            settled[src] = max(settled[src], bound)
        if restore:
            al = Aligner(parts, pickle.loads(pickle.dumps(al.snapshot())))
        released += al.release(cs)
        ks = min(settled.values(), default=MAX_TS)
        merged = merge(read_contacts, read_updates)
        want = settled_prefix(merged, cs, ks)
        assert released == want, f"after {src} (settled {bound})"
        waiting = merged[len(want):]
        assert al.waiting() == len(waiting)
        b = MAX_TS if ks >= MAX_TS else ks + 1
        first_contact = next((e.ts for e in waiting if not is_update(e)), MAX_TS)
        first_update = min((e.ts for e in waiting if is_update(e)), default=MAX_TS)
        assert al.bound() == min(b, first_contact, first_update)
    for p in parts:  # the end: every input settled
        al.add_catalog(p, [], MAX_TS)
    released += al.release(MAX_TS)
    assert released == merge(read_contacts, read_updates)
    assert al.waiting() == 0 and al.late == 0


# -- examples ------------------------------------------------------------------------------------

def test_same_millisecond_contact_events_come_before_the_update():
    al = Aligner(("c0",))
    u = update("c0", 0, 5)
    al.add_catalog("c0", [u], 5)
    assert al.release(4) == []  # a contact event at 5 may still come
    e = contact(0, 5)
    al.add_contacts([e])
    assert al.release(5) == [e, u]


def test_a_contact_event_waits_for_the_updates_before_it():
    al = Aligner(("c0", "c1"))
    e = contact(0, 10)
    al.add_contacts([e])
    al.add_catalog("c0", [], 20)
    assert al.release(10) == []  # c1 has settled nothing
    assert al.bound() == NEVER + 1
    al.add_catalog("c1", [], 8)
    assert al.release(10) == [] and al.bound() == 9  # c1 may still hold an update at 9
    u = update("c1", 0, 9)
    al.add_catalog("c1", [u], 9)
    assert al.release(10) == [u, e]
    assert al.bound() == 10


def test_without_catalogue_partitions_contact_events_flow():
    al = Aligner(())
    evs = [contact(0, 3), contact(1, 3), contact(2, 7)]
    al.add_contacts(evs)
    assert al.release(NEVER) == evs and al.bound() == MAX_TS


def test_updates_are_ordered_by_time_across_partitions():
    al = Aligner(("c0", "c1"))
    a, b, c = update("c0", 0, 4), update("c1", 0, 2), update("c1", 1, 4)
    al.add_catalog("c0", [a], 10)
    al.add_catalog("c1", [c, b], 10)
    assert al.release(10) == [b, a, c]


def test_snapshot_keeps_what_waits_and_the_bounds():
    al = Aligner(("c0",))
    e, u = contact(0, 6), update("c0", 0, 6)
    al.add_contacts([e])
    al.add_catalog("c0", [u], 5)
    assert al.release(5) == [e]  # u waits for the contact events of its millisecond
    again = Aligner(("c0",), pickle.loads(pickle.dumps(al.snapshot())))
    assert again.waiting() == al.waiting() == 1 and again.catalog_settled() == 5
    assert again.bound() == al.bound() == 6
    assert again.release(6) == al.release(6) == [u]


def test_updates_of_two_partitions_keep_time_order():
    """An update at 1 read on c0 must wait while c1 may still hold an update at 0 (c1 has
    settled nothing): else the update at 0, read next, is released after the one at 1. The
    engine then meets the triggers of 1 before those of 0 (its per-contact inbox is in time order)."""
    al = Aligner(("c0", "c1"))
    u1, u0 = update("c0", 0, 1), update("c1", 0, 0)
    al.add_catalog("c0", [u1], 1)
    al.add_contacts([])
    first = al.release(5)  # contact events up to 5 all read (there are none)
    al.add_catalog("c1", [u0], 1)
    assert first + al.release(5) == [u0, u1]


def test_an_idle_catalogue_is_settled_to_the_wall_clock_minus_the_lateness():
    """Live: a catalogue partition with nothing more to read lets contact events through once
    the wall clock is `lateness` past them, wakes the shard then, and not before."""
    a = Aligner(("c0",), lateness_ms=1000)
    a.add_catalog("c0", [], 10_000, idle_since=50_000)
    a.add_contacts([contact(1, 60_000), contact(2, 60_500)], arrival_ms=60_010)
    assert a.release(60_500, now_ms=60_800) == []  # 60_800 - 1000 < 60_000 - 1
    assert a.wake_at() == 60_000 - 1 + 1000
    assert a.bound(60_800) == 59_800 + 1
    got = a.release(60_500, now_ms=60_999)
    assert [e.event_id for e in got] == ["e1"] and a.arrival == 60_010
    assert [e.event_id for e in a.release(60_500, now_ms=61_500)] == ["e2"]
    assert a.release(60_500, now_ms=70_000) == [] and a.arrival is None


def test_a_partition_still_reading_is_not_settled_by_the_wall_clock():
    """Without `idle_since` (reading a backlog, or replay), only what was read counts."""
    a = Aligner(("c0",), lateness_ms=1000)
    a.add_catalog("c0", [update("c0", 1, 5_000)], 4_999, idle_since=None)
    a.add_contacts([contact(1, 6_000)], arrival_ms=1)
    assert a.release(6_000, now_ms=10**12) == [update("c0", 1, 5_000)]
    assert a.wake_at() is None and a.waiting() == 1
