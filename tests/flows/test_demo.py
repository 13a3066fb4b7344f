"""`espresso demo` pieces: its segments and campaigns load, its traffic is valid and sendable,
its words and message lines are right, its flags are typed settings."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import yaml

from commands.demo import DemoSettings, Traffic, add_demo_args, demo_segments_yaml, describe_change
from commands.demo_messages import (Trigger, demo_campaigns_yaml, describe_message, message_latency, message_text,
                                    percentiles)
from state.definitions import parse_segments
from state.errors import ConfigError
from state.events import Invalid, parse_event
from state.program import compile_program
from state.timeutil import format_ms


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


# -- campaigns and messages -------------------------------------------------------------
def _demo_campaigns(tmp_path, window: str = "45s", after: str = "15s", expires: str = "1m"):
    from state.campaigns import load_campaigns
    from state.timeutil import parse_duration

    segs = parse_segments(yaml.safe_load(demo_segments_yaml(window, after, expires)), "demo-segments.yaml")
    path = tmp_path / "demo-campaigns.yaml"
    path.write_text(demo_campaigns_yaml(parse_duration(window)))
    return segs, load_campaigns(path, segs)


def test_demo_campaigns_are_the_builtin_ones_on_the_demo_clock(tmp_path):
    """The demo's campaign file loads with `load_campaigns` against the demo segments; it is the
    built-in file with every duration x window/72h, reminders on abandoned-checkout, no quiet
    hours and stale messages still sent; templates, channels, priorities and variants unchanged."""
    from state.campaigns import builtin_campaigns

    segs, camps = _demo_campaigns(tmp_path)
    compile_program(list(camps.segments), camps.required_keep())
    builtin = builtin_campaigns()
    assert [(c.id, c.channel, c.priority, [v.name for v in c.variants]) for c in camps.campaigns] == \
        [(c.id, c.channel, c.priority, [v.name for v in c.variants]) for c in builtin.campaigns]
    by_id = camps.by_id
    assert by_id["email-espresso-sms-followup"].delay_ms == 1300  # 2h x 45s/72h = 1.25 s, rounded
    assert by_id["checkout-reminder-3h"].delay_ms == 1900 and by_id["checkout-reminder-1d"].delay_ms == 15_000
    assert by_id["email-espresso-resend"].reentry_ms == 105_000  # 7d
    assert {c.name: c.per_ms for c in camps.caps} == {"email": 10_000, "sms": 45_000, "push": 15_000, "all": 15_000}
    assert {c.segment for c in camps.campaigns} <= {s.id for s in segs}
    assert by_id["checkout-reminder-3h"].segment == "abandoned-checkout"
    assert all(c.quiet is None and c.allow_stale and c.max_staleness_ms == 30_000 for c in camps.campaigns)
    assert [s.id for s in camps.segments] == [s.id for s in segs]  # no segment of its own
    # a tiny window still gives valid (positive) durations
    _, small = _demo_campaigns(tmp_path, "5s", "2s", "8s")
    assert all(c.delay_ms >= 0 and c.max_defer_ms >= 1 for c in small.campaigns)


def test_demo_traffic_gives_campaigns_what_they_need(tmp_path):
    """Replayed through the demo segments and campaigns, the synthetic shop sends on every
    campaign: contacts have consent, an address per consented channel and a first name."""
    from flows.replay import replay

    segs, _ = _demo_campaigns(tmp_path)
    (tmp_path / "demo-segments.yaml").write_text(demo_segments_yaml("45s", "15s", "1m"))
    t = Traffic(contacts=60, seed=3)
    evs = []
    for i in range(1500):
        evs += t.tick(1_790_000_000_000 + i * 125)
    profiles = [e["properties"] for e in evs if e["type"] == "profile_updated"]
    assert all(p["first_name"] and p["email"].endswith("@example.com") for p in profiles)
    assert any("phone" in p for p in profiles) and any("push_token" in p for p in profiles)
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in evs) + b"\n")
    res = replay(tmp_path / "events.jsonl", 1_790_000_000_000 + 1500 * 125 + 60_000, tmp_path / "changes.jsonl",
                 tmp_path / "demo-segments.yaml", campaigns=str(tmp_path / "demo-campaigns.yaml"), progress=False,
                 parse_ahead=False)
    messages = [orjson.loads(line) for line in (tmp_path / "changes.messages.jsonl").read_bytes().splitlines()]
    decisions = [orjson.loads(line) for line in (tmp_path / "changes.decisions.jsonl").read_bytes().splitlines()]
    assert res.messages == len(messages) > 0
    assert {m["campaign_id"] for m in messages} == {c.id for c in _demo_campaigns(tmp_path)[1].campaigns}
    assert not [d for d in decisions if d["outcome"] == "failed"]  # never no_address, never a template error
    assert all(m["to"] and "there" not in (m["subject"] or m["body"]) for m in messages)


def _message(**over):
    rec = {"schema": 1, "message_id": "m1", "campaign_id": "email-espresso-resend", "channel": "email",
           "contact_id": "c-0019", "variant": "B", "segment_id": "email-espresso", "change_id": "ch1",
           "due_at": format_ms(1_790_000_000_000), "to": {"email": "sofia.0019@example.com"},
           "subject": "Sofia, free shipping on us until Sunday", "body": "Hi Sofia,\nin case...\n", "data": {}}
    rec.update(over)
    return rec


def test_message_lines_name_channel_person_text_campaign_and_latency():
    """A message line lines up with the change lines (time, who, a 5-wide word) and says what the
    person sees first, the campaign and variant, and the time since the event that triggered it;
    a timed message (delay, deferral, time-driven change) says how long after due it was read."""
    at = 1_790_000_000_000
    clock = datetime.fromtimestamp(at / 1000, tz=timezone.utc).astimezone().strftime("%H:%M:%S.%f")[:-3]
    now = Trigger(at, "email_open", at + 2)
    line = describe_message(_message(), "c-0019 (Sofia)", now, at + 40)
    assert line == (f'{clock}  c-0019 (Sofia)   EMAIL  "Sofia, free shipping on us until Sunday"  '
                    "(email-espresso-resend, variant B)  38 ms after the email open")
    change_line = f"{clock}  {'c-0019 (Sofia)':<16} ENTER  email-espresso      opened an email"
    assert line[:38] == change_line[:31] + "EMAIL  " and change_line[31:36] == "ENTER"
    assert message_latency(_message(), now, at + 40) == ("event", 38)

    sms = _message(channel="sms", campaign_id="email-espresso-sms-followup", variant=None, subject=None,
                   due_at=format_ms(at + 1300), body="Sofia, your favourites are still waiting: "
                   "shop.example/e?c=c-0019 - reply STOP to opt out")
    line = describe_message(sms, "c-0019 (Sofia)", now, at + 3320)
    assert '  SMS    "Sofia, your favourites are still waiting..."  (email-espresso-sms-followup)  ' \
           "2.02 s after due  [time]" in line
    assert message_latency(sms, now, at + 3320) == ("due", 2020)

    push = _message(channel="push", campaign_id="push-espresso-urgent", variant=None, subject="Almost gone",
                    body="Sofia, what you looked at is selling fast - only a few left.", stale=True)
    line = describe_message(push, "c-0019 (Sofia)", Trigger(at, "push_open", at), at + 25)
    assert '  PUSH   "Almost gone: Sofia, what you looked at is selling..."  (push-espresso-urgent)  ' \
           "25 ms after the push open  [stale]" in line
    # a time-caused change (abandoned checkout), and a change not read yet: latency after due
    assert message_latency(_message(), Trigger(at, None, None), at + 2000) == ("due", 2000)
    assert describe_message(_message(), "c-0019 (Sofia)", None, at + 5).endswith("5 ms after due")
    assert message_text(_message(subject="x" * 80)) == "x" * 53 + "..."  # no word boundary: cut anywhere
    assert message_text(_message(subject="Hi " + "y" * 60)) == "Hi " + "y" * 50 + "..."
    assert percentiles([5, 1, 3, 2, 4]) == (3, 5)


def test_demo_settings_are_typed_and_bad_values_are_one_line():
    """The demo's flags load through `commands.settings`: --duration takes seconds or a duration,
    windows are durations, and a bad value is one line naming the flag (exit code 2, no traceback)."""
    import argparse
    import subprocess
    import sys

    from commands.settings import load

    p = argparse.ArgumentParser()
    add_demo_args(p)
    s = load(DemoSettings, p.parse_args([]), {})
    assert (s.duration, s.window, s.abandoned_after, s.rate, s.no_campaigns) == (None, 45_000, 15_000, 8.0, False)
    s = load(DemoSettings, p.parse_args(["--duration", "12", "--window", "5s", "--no-campaigns"]), {})
    assert (s.duration, s.window, s.no_campaigns) == (12_000, 5_000, True)
    assert load(DemoSettings, p.parse_args(["--duration", "2m"]), {}).duration == 120_000
    for argv, expected in ((["--window", "45"], "--window: not a duration (got --window '45'); give a duration"),
                           (["--duration", "soon"], "--duration: not a duration (got --duration 'soon')"),
                           (["--rate", "0"], "--rate: must be more than 0"),
                           (["--abandoned-after", "0s"], "--abandoned-after: must be more than 0"),
                           (["--contacts", "0"], "--contacts: must be 1 or more")):
        with pytest.raises(ConfigError) as exc:
            load(DemoSettings, p.parse_args(argv), {})
        assert str(exc.value).startswith(expected) and "\n" not in str(exc.value), str(exc.value)
    res = subprocess.run([sys.executable, "-m", "commands.cli", "demo", "--window", "45"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "espresso demo: --window: not a duration (got --window '45'); give a duration such as " \
                         "45s or 2m\n"
