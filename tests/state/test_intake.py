"""Intake: routing of events to shards, types no shard uses, and parsing in a helper process."""

from __future__ import annotations

import pickle

import orjson

from state.intake import Intake, shard_of
from state.timeutil import NEVER


def _line(i: int, cid: str, etype: str, ts: int) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "contact_id": cid, "type": etype, "ts": ts})


RECORDS = [
    (_line(1, "a", "email_open", 1_000), 1),
    (_line(2, "b", "page_view", 5_000), 2),  # a type no segment uses, the newest event
    (b'{"event_id":"e3","contact_id":"c","type":"page_view","ts":"soon"}', 3),  # invalid, unused type
    (_line(4, "c", "order_placed", 2_000), 4),
]


def test_types_no_shard_uses_are_counted_move_time_and_are_not_routed():
    intake = Intake(4, wanted=frozenset({"email_open", "order_placed"}))
    routes, dead = intake.process(RECORDS, {"file": "x"}, "line")
    routed = [e for r in routes for e in r]
    assert sorted(e.event_id for e in routed) == ["e1", "e4"]
    assert all(e in routes[shard_of(e.contact_id, 4)] for e in routed)
    assert intake.ignored == 1 and intake.frontier == 5_000  # the unused event still moves event time
    assert [(d.reason, d.source) for d in dead] == [("bad_ts", {"file": "x", "line": 3})]
    assert intake.consumed == {"email_open": 1, "page_view": 1, "order_placed": 1}


def test_without_a_filter_every_valid_event_is_routed():
    intake = Intake(1)
    routes, _ = intake.process(RECORDS, {}, "line")
    assert [e.event_id for e in routes[0]] == ["e1", "e2", "e4"] and intake.ignored == 0


def test_a_batch_parsed_elsewhere_is_absorbed_as_if_processed_here():
    """What the parse-ahead helper sends, after pickling, leaves the partition's intake
    exactly as `process` would: frontier, counts, routes (as plain tuples) and dead letters."""
    wanted = frozenset({"email_open", "order_placed"})
    here = Intake(2, frontier=500, wanted=wanted)
    want_routes, want_dead = here.process(RECORDS, {"file": "x"}, "line")

    helper = Intake(2, wanted=wanted)
    parsed = pickle.loads(pickle.dumps(helper.parse(RECORDS, {"file": "x"}, "line")))
    there = Intake(2, frontier=500, wanted=wanted)
    routes, dead = there.absorb(parsed)
    assert routes == [[tuple(e) for e in r] for r in want_routes]
    assert all(type(e) is tuple for r in routes for e in r)
    assert dead == want_dead
    assert (there.frontier, there.consumed, there.invalid, there.ignored) == \
        (here.frontier, here.consumed, here.invalid, here.ignored)
    # A second batch: the helper's counts start again, the partition's add up.
    parsed2 = helper.parse(RECORDS[:1], {"file": "x"}, "line")
    there.absorb(parsed2)
    assert there.consumed["email_open"] == 2 and parsed2.frontier == 1_000 and there.frontier == 5_000
    assert Intake(1).parse([], {}, "line").frontier == NEVER


def test_remembered_ids_are_found_until_the_horizon_has_passed_twice():
    """The last `horizon` ids are always remembered, whether added one by one or in bulk."""
    from state.dedup import SeenIds

    seen = SeenIds(horizon=3)
    seen.add_all_new(["a", "b"])
    assert seen.add("a") and seen.add("b") and not seen.add("c")  # c: new, now remembered
    seen.add_all_new(["d", "e", "f", "g"])  # rotates: a, b, c age out of both generations
    assert [seen.add(x) for x in ("e", "f", "g")] == [True, True, True]
    assert not seen.add("a")
