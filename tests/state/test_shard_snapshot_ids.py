"""Contact ids in a shard snapshot are packed into one blob (it pickles ~10x faster than a
list of a million strings): any id, even empty or holding a NUL, comes back as it was."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from state.definitions import builtin_segments
from state.events import Event
from state.program import compile_program
from state.shard import Shard, pack_ids, unpack_ids


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=6)))
def test_any_ids_round_trip(ids):
    assert unpack_ids(pickle.loads(pickle.dumps(pack_ids(ids)))) == ids


def test_a_restored_shard_finds_its_contacts_by_id():
    program = compile_program(builtin_segments())
    shard = Shard(program)
    ids = ["c1", "ü-2", "c\x003"]
    shard.apply([Event(f"e{i}", cid, "email_open", 1000 + i, {}) for i, cid in enumerate(ids)])
    again = Shard(program, state=pickle.loads(pickle.dumps(shard.snapshot())))
    assert [again.row_of(cid) for cid in ids] == [shard.row_of(cid) for cid in ids] == [0, 1, 2]


def test_the_flows_snapshot_resumes_like_the_shard_it_was_taken_from():
    """`snapshot(copy=False)` (what a flow pickles at each epoch: ids packed, timers not written
    but rebuilt from the timer column) resumes into a shard that writes the same changes."""
    import random

    program = compile_program(builtin_segments())
    rnd = random.Random(5)
    events = sorted((Event(f"e{i}", f"c{rnd.randrange(40)}", rnd.choice(["email_open", "consent_changed", "order_placed"]),
                           1_000_000 + i * 60_000 + rnd.randrange(30_000),
                           {"channel": "email", "status": "subscribed"}) for i in range(600)), key=lambda e: e.ts)
    shard = Shard(program)
    shard.apply(events[:300])
    shard.advance(events[299].ts)
    again = Shard(program, state=pickle.loads(pickle.dumps(shard.snapshot(copy=False))))
    assert again.snapshot().heap is not None
    later, end = events[300:], events[-1].ts + 100 * 3_600_000
    want = shard.apply(later) + shard.advance(end)
    got = again.apply(later) + again.advance(end)
    assert got == want and len(want) > 20
