"""Membership view on a real Redis: idempotent, order-safe application of segment changes."""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.membership import ApplyStats, MembershipConfig, MembershipView

pytestmark = pytest.mark.integration


def change(contact: str, segment: str, direction: str, seq: int) -> dict:
    return {"schema": 1, "change_id": f"{contact}-{segment}-{seq}", "contact_id": contact, "segment_id": segment,
            "direction": direction, "at": "2026-11-20T09:15:00.123Z", "seq": seq}


@pytest.fixture
def view(redis_url, key_prefix):
    v = MembershipView(MembershipConfig(redis_url, prefix=key_prefix.rstrip(":"), batch=7))
    yield v
    v.close()


def test_enter_and_exit_update_both_sets(view):
    """enter adds the contact to the segment set and the segment to the contact set; exit removes both."""
    stats = view.apply([change("c1", "email-espresso", "enter", 1), change("c2", "email-espresso", "enter", 1),
                        change("c1", "sms-espresso", "enter", 2), change("c2", "email-espresso", "exit", 2)])
    assert stats == ApplyStats(4, 0, 0)
    assert view.is_member("c1", "email-espresso") and not view.is_member("c2", "email-espresso")
    assert view.count("email-espresso") == 1 and sorted(view.members("email-espresso")) == ["c1"]
    assert view.segments_of("c1") == {"email-espresso", "sms-espresso"} and view.segments_of("c2") == set()
    assert view.last_seq("c2", "email-espresso") == 2


def test_reapplying_is_a_no_op(view):
    """Applying the same changes again (a replay after recovery) changes nothing and is counted ignored."""
    changes = [change("c1", "s", "enter", 1), change("c1", "s", "exit", 2), change("c1", "s", "enter", 3)]
    assert view.apply(changes) == ApplyStats(3, 0, 0)
    assert view.apply(changes) == ApplyStats(0, 3, 0)
    assert view.is_member("c1", "s") and view.last_seq("c1", "s") == 3


def test_older_change_after_newer_is_ignored(view):
    """An exit with seq 4 then a late enter with seq 3: the contact stays out."""
    assert view.apply([change("c1", "s", "exit", 4), change("c1", "s", "enter", 3)]) == ApplyStats(1, 1, 0)
    assert not view.is_member("c1", "s")


def test_malformed_changes_are_counted_not_applied(view):
    """A change without contact, with an unknown direction or a non-integer seq is refused."""
    bad = [{"segment_id": "s", "direction": "enter", "seq": 1}, change("c", "s", "maybe", 1),
           change("c", "s", "enter", "1"), change("c", "s", "enter", 0)]
    assert view.apply(bad) == ApplyStats(0, 0, 4)
    assert view.count("s") == 0


def test_members_iterates_large_segments(view):
    """SSCAN-based members() returns every contact of a 5000-member segment exactly once."""
    view.apply(change(f"c{i}", "big", "enter", 1) for i in range(5000))
    members = list(view.members("big", page=300))
    assert len(members) == len(set(members)) == 5000 == view.count("big")


@st.composite
def histories(draw):
    """Per-contact change streams with increasing seq across segments, as the engine emits them."""
    out = []
    for contact in range(draw(st.integers(1, 4))):
        seq = 0
        for _ in range(draw(st.integers(0, 8))):
            seq += 1
            out.append(change(f"c{contact}", draw(st.sampled_from(["a", "b"])), draw(st.sampled_from(["enter", "exit"])),
                              seq))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), seed=st.integers(0, 2**32 - 1), repeat=st.integers(0, 3))
def test_any_order_and_repeats_give_the_in_order_view(redis_url, history, seed, repeat):
    """Applying a change stream shuffled, with random repeats, in random batch sizes gives the same
    view as applying it once in order: the last change per (contact, segment) wins."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    rng = random.Random(seed)
    in_order = MembershipView(MembershipConfig(redis_url, prefix="ordered"))
    in_order.apply(history)
    noisy = history + [rng.choice(history) for _ in range(repeat * len(history) // 2)] if history else []
    rng.shuffle(noisy)
    shuffled = MembershipView(MembershipConfig(redis_url, prefix="shuffled", batch=rng.randint(1, 10)))
    shuffled.apply(noisy)
    for contact in {c["contact_id"] for c in history}:
        assert shuffled.segments_of(contact) == in_order.segments_of(contact)
    for segment in ("a", "b"):
        assert sorted(shuffled.members(segment)) == sorted(in_order.members(segment))
    in_order.close()
    shuffled.close()
    client.close()
