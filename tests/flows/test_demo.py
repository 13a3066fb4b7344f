"""`espresso demo` pieces: its segments compile, its traffic is valid, its words are right."""

from __future__ import annotations

import orjson

from commands.demo import Traffic, demo_segments_yaml, describe_change
from state.definitions import parse_segments
from state.events import Invalid, parse_event
from state.program import compile_program

import yaml


def test_demo_segments_compile_with_a_short_window():
    """The demo's YAML is the built-in espresso trio with the demo window, plus abandoned checkout."""
    text = demo_segments_yaml("45s", "15s", "1m")
    segs = parse_segments(yaml.safe_load(text), "demo.yaml")
    compile_program(segs)
    assert [s.id for s in segs] == ["email-espresso", "sms-espresso", "push-espresso", "abandoned-checkout"]
    assert "within: 45s" in text and "within: 72h" not in text


def test_traffic_is_valid_realistic_and_deterministic():
    """Every event the demo produces is valid; the mix has sign-ups, opens, checkouts and orders;
    the same seed gives the same stream; broken records only come from `invalid()`."""
    def run(seed):
        t = Traffic(contacts=50, seed=seed)
        evs = []
        for i in range(2000):
            evs += t.tick(1_790_000_000_000 + i * 100)
        return evs
    evs = run(1)
    assert evs == run(1)
    for ev in evs:
        assert not isinstance(parse_event(orjson.dumps(ev)), Invalid), ev
    types = {e["type"] for e in evs}
    assert {"consent_changed", "profile_updated", "email_open", "email_click", "checkout_started",
            "order_placed", "sms_click", "push_open"} <= types
    t = Traffic(10, seed=2, invalid_rate=1.0)
    t.tick(0)
    bad = [t.invalid(0) for _ in range(20)]
    assert all(isinstance(parse_event(b), Invalid) for b in bad)


def test_changes_are_described_in_words():
    """An event-caused change names what the person did; a time-caused one what aged out."""
    ev = lambda seg, d, typ: {"segment_id": seg, "direction": d, "cause": {"kind": "event", "type": typ}}  # noqa: E731
    tm = lambda seg, d: {"segment_id": seg, "direction": d, "cause": {"kind": "time"}}  # noqa: E731
    assert describe_change(ev("email-espresso", "enter", "email_open"), "2m", "30s", "2m") == "opened an email"
    assert describe_change(ev("email-espresso", "exit", "order_placed"), "2m", "30s", "2m") == "placed an order"
    assert describe_change(ev("email-espresso", "exit", "consent_changed"), "2m", "30s", "2m") == "unsubscribed"
    assert describe_change(tm("email-espresso", "exit"), "2m", "30s", "2m") == "email open/click aged out (window 2m)"
    assert "order aged out" in describe_change(tm("sms-espresso", "enter"), "2m", "30s", "2m")
    assert describe_change(tm("abandoned-checkout", "enter"), "2m", "30s", "2m") == "checkout not completed within 30s"
