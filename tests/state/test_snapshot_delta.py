"""Snapshots that cost what changed (state/shard.py `delta`, `apply_delta`): a base written
whole once, then only the rows touched since; base + delta is exactly the shard's state, and
a shard restored from it goes on exactly like the one that never stopped."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.definitions import builtin_segments, parse_segments
from state.events import Event
from state.program import compile_program
from state.shard import Shard, apply_delta

import yaml

H = 3_600_000
T0 = 1_795_000_000_000
EXTRA = yaml.safe_load("""
segments:
  - id: spent
    when: {lifetime: {type: order_placed, aggregate: sum, property: value, op: '>=', value: 50}}
  - id: profile-vip
    when: {profile: {field: tier, op: equals, value: vip}}
""")


def program():
    return compile_program(builtin_segments() + parse_segments(EXTRA, "extra.yaml"))


def events(rnd: random.Random, n: int, contacts: int, start: int) -> list[Event]:
    out, ts = [], start
    for k in range(n):
        ts += rnd.choice([0, 0, 1, 1000, 60_000, 3 * H])
        etype = rnd.choice(["email_open", "email_click", "order_placed", "consent_changed", "profile_updated",
                            "sms_click"])
        props: dict = {}
        if etype == "order_placed":
            props = {"value": rnd.choice([10, 30.5])}
        elif etype == "consent_changed":
            props = {"channel": rnd.choice(["email", "sms"]), "status": rnd.choice(["subscribed", "unsubscribed"])}
        elif etype == "profile_updated":
            props = {"tier": rnd.choice(["vip", "basic"])}
        late = rnd.random() < 0.05
        out.append(Event(f"e{start}-{k}" if rnd.random() > 0.03 else f"e{start}-{max(k - 1, 0)}",
                         f"c{rnd.randrange(contacts)}", etype, ts - (2 * H if late else 0), props))
    return out


def drive(shard: Shard, evs: list[Event], step: int) -> list:
    out = []
    for i in range(0, len(evs), step):
        batch = evs[i:i + step]
        out += shard.apply(batch)
        out += shard.advance(max(e.ts for e in batch) - H)
    return out


def same_state(a, b) -> None:
    from state.shard import unpack_ids

    assert unpack_ids(a.cids) == unpack_ids(b.cids)
    assert [list(x) for x in a.ints] == [list(x) for x in b.ints]
    assert [list(x) for x in a.floats] == [list(x) for x in b.floats]
    assert [list(x) for x in a.objects] == [list(x) for x in b.objects]
    assert a.pending == b.pending and a.stats == b.stats
    assert a.seen.__getstate__()[2:] == b.seen.__getstate__()[2:]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), contacts=st.integers(1, 60), step=st.integers(1, 50),
       before=st.integers(0, 400), after=st.integers(0, 400))
def test_base_plus_delta_is_the_state_and_goes_on_alike(seed, contacts, step, before, after):
    rnd = random.Random(seed)
    shard = Shard(program())
    drive(shard, events(rnd, before, contacts, T0), step)
    base = pickle.loads(pickle.dumps(shard.snapshot()))
    shard.mark_base()
    drive(shard, events(rnd, after, contacts + 20, T0 + 10 * H), step)
    delta = pickle.loads(pickle.dumps(shard.delta()))
    assert len(delta.rows) + len(shard) - delta.base_rows == shard.changed_rows()
    now = apply_delta(base, delta)
    same_state(now, shard.snapshot())
    restored = Shard(program(), state=now)
    tail = events(rnd, 200, contacts + 30, T0 + 100 * H)
    assert drive(restored, tail, 17) + restored.advance(T0 + 1000 * H) == \
        drive(shard, tail, 17) + shard.advance(T0 + 1000 * H)


def test_the_delta_carries_only_the_rows_touched_since_the_base():
    rnd = random.Random(3)
    shard = Shard(program(), 2048)  # the dedup table is written whole: bounded by the horizon, not the contacts
    drive(shard, events(rnd, 20_000, 5_000, T0), 500)
    shard.mark_base()
    assert shard.changed_rows() == 0
    touched = {f"c{i}" for i in range(0, 5_000, 50)}
    held = set(shard.index)
    shard.apply([Event(f"x{i}", cid, "email_open", T0 + 900 * H, {}) for i, cid in enumerate(sorted(touched))])
    shard.apply([Event("new", "newcomer", "email_open", T0 + 900 * H, {})])
    delta = shard.delta()
    assert {shard.cids[r] for r in delta.rows.tolist()} == touched & held
    assert shard.changed_rows() == len(touched | held) - len(held) + len(touched & held) + 1
    full = len(pickle.dumps(shard.snapshot()))
    assert len(pickle.dumps(delta)) < full / 5


def test_a_delta_applies_only_to_its_own_base():
    shard = Shard(program())
    shard.apply(events(random.Random(1), 100, 10, T0))
    base = shard.snapshot()
    shard.mark_base()
    shard.apply(events(random.Random(2), 100, 30, T0 + 10 * H))
    other = Shard(program())
    other.apply(events(random.Random(1), 50, 4, T0))
    with pytest.raises(ValueError, match="cannot apply to a base of"):
        apply_delta(other.snapshot(), shard.delta())
    assert apply_delta(base, shard.delta()).cids


def test_blobs_carry_states_and_deltas_exactly_and_read_plain_pickles():
    from state.blobs import pack, pack_state, unpack, unpack_state

    rnd = random.Random(9)
    shard = Shard(program())
    drive(shard, events(rnd, 800, 50, T0), 40)
    whole = shard.snapshot()
    base = unpack_state(pack_state(shard.snapshot(copy=False)))
    same_state(base, whole)
    shard.mark_base()
    drive(shard, events(rnd, 300, 80, T0 + 50 * H), 40)
    payload = ("v", unpack(pack(shard.delta())), 7)
    again = unpack(pack(payload))  # a delta inside another packed object, as a flow's snapshot
    same_state(apply_delta(base, again[1]), shard.snapshot())
    assert again[0] == "v" and again[2] == 7
    assert unpack(pickle.dumps({"older": [1, 2]})) == {"older": [1, 2]}
    assert unpack_state(pickle.dumps(whole)).fingerprint == whole.fingerprint
