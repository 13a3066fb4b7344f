"""`espresso replay` end to end through the Bytewax flow, as a user runs it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson

from state.definitions import builtin_segments
from state.events import parse_event
from state.program import compile_program
from state.timeutil import format_ms
from tests.oracle import expected_changes

ROOT = Path(__file__).resolve().parents[2]
H = 3_600_000
T0 = 1_795_000_000_000


def make_stream(n: int, seed: int) -> list[bytes]:
    """In-order events for a few contacts, with duplicates and invalid lines mixed in."""
    rnd = random.Random(seed)
    lines, t = [], T0
    for i in range(n):
        t += rnd.choice([0, 0, H // 2, H, 24 * H])
        typ = rnd.choice(["email_open", "email_click", "order_placed", "consent_changed", "sms_click", "push_open"])
        props = {}
        if typ == "consent_changed":
            props = {"channel": rnd.choice(["email", "sms", "push"]), "status": rnd.choice(["subscribed", "unsubscribed"])}
        ts = format_ms(t) if rnd.random() < 0.5 else t
        ev = {"event_id": f"e{i}", "contact_id": f"c{rnd.randrange(5)}", "type": typ, "ts": ts, "properties": props}
        lines.append(orjson.dumps(ev))
        if rnd.random() < 0.05:
            lines.append(lines[-1])  # redelivery
        if rnd.random() < 0.03:
            lines.append(rnd.choice([b"{oops", b'{"event_id": "x"}', b'{"event_id":"y","contact_id":"c","type":"t","ts":"soon"}']))
    return lines


def run_replay(tmp: Path, lines: list[bytes], until: str, *extra: str) -> tuple[list[dict], list[dict], str]:
    events = tmp / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp / "changes.jsonl"
    proc = subprocess.run([sys.executable, "-m", "commands.cli", "replay", str(events), "--until", until,
                           "--out", str(out), *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    dead = out.with_name("changes.dead-letters.jsonl")
    read = lambda p: [orjson.loads(x) for x in p.read_bytes().splitlines()]  # noqa: E731
    return read(out), read(dead), proc.stderr


def test_replay_equals_brute_force_and_reports_dead_letters(tmp_path):
    """Replay's changes are exactly the oracle's; every invalid line is in the dead-letter file with its reason."""
    lines = make_stream(400, seed=7)
    until = format_ms(T0 + 2000 * H)
    changes, dead, stderr = run_replay(tmp_path, lines, until)
    events = [e for e in (parse_event(x) for x in lines) if not hasattr(e, "reason")]
    program = compile_program(builtin_segments())
    want = expected_changes(builtin_segments(), events, T0 + 2000 * H, program.reasons)
    assert sorted((c["contact_id"], c["segment_id"], c["direction"], c["at"]) for c in changes) == \
        sorted((c, s, d, format_ms(at)) for c, s, d, at in want)
    invalid = [x for x in lines if hasattr(parse_event(x), "reason")]
    assert len(dead) == len(invalid) > 0
    assert {d["reason"] for d in dead} <= {"not_json", "missing_field", "bad_ts"}
    assert all(d["source"]["file"] == "events.jsonl" and d["source"]["line"] >= 1 and d["raw"] for d in dead)
    assert f"{len(changes)} changes" in stderr


def test_replay_is_deterministic_to_the_byte(tmp_path):
    """Same input, same bytes out (change ids included)."""
    lines = make_stream(300, seed=11)
    until = format_ms(T0 + 1000 * H)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_replay(tmp_path / "a", lines, until)
    run_replay(tmp_path / "b", lines, until)
    a = (tmp_path / "a" / "changes.jsonl").read_bytes()
    assert a and a == (tmp_path / "b" / "changes.jsonl").read_bytes()


def test_parse_ahead_changes_nothing_in_the_output(tmp_path):
    """Parsing in the helper process (the default on two cores) writes the same bytes,
    dead letters included, as parsing in the worker; more than one batch is crossed."""
    lines = make_stream(2500, seed=5)
    until = format_ms(T0 + 9000 * H)
    outs = {}
    for flag in ("--parse-ahead", "--no-parse-ahead"):
        (tmp_path / flag).mkdir()
        run_replay(tmp_path / flag, lines, until, flag)
        outs[flag] = [(tmp_path / flag / name).read_bytes() for name in ("changes.jsonl", "changes.dead-letters.jsonl")]
    assert outs["--parse-ahead"][0] and outs["--parse-ahead"][1]
    assert outs["--parse-ahead"] == outs["--no-parse-ahead"]


def test_changes_follow_the_documented_format(tmp_path):
    """Every change has the contract fields; time-driven ones say so; enters carry expires_at."""
    changes, _, _ = run_replay(tmp_path, make_stream(200, seed=3), format_ms(T0 + 1000 * H))
    assert changes
    for c in changes:
        assert {"contact_id", "segment_id", "direction", "at", "change_id", "schema", "seq", "cause"} <= set(c)
        assert c["direction"] in ("enter", "exit") and c["at"].endswith("Z") and len(c["change_id"]) == 32
        if c["cause"]["kind"] == "event":
            assert c["cause"]["event_id"].startswith("e")
    assert any(c["cause"]["kind"] == "time" for c in changes)
    assert any(c["direction"] == "enter" and c["expires_at"] for c in changes)


def test_custom_segments_and_bad_definitions(tmp_path):
    """--segments loads a user's file; a broken one stops start-up with file, path and fix, exit code 2."""
    seg = tmp_path / "segs.yaml"
    seg.write_text("segments:\n  - id: clickers\n    when: {event: {type: email_click, at_least: 2, within: 2d}}\n")
    changes, _, _ = run_replay(tmp_path, make_stream(300, seed=5), format_ms(T0 + 1000 * H), "--segments", str(seg))
    assert changes and {c["segment_id"] for c in changes} == {"clickers"}
    seg.write_text("segments:\n  - id: clickers\n    when: {event: {type: email_click, at_least: 2, within: 2 days}}\n")
    proc = subprocess.run([sys.executable, "-m", "commands.cli", "replay", str(tmp_path / "events.jsonl"), "--until",
                           "2026-12-01T00:00:00Z", "--out", str(tmp_path / "x.jsonl"), "--segments", str(seg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "segs.yaml: segments[0].when.event.within: must be a positive duration" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_replay_with_campaigns_reproduces_every_decision(tmp_path):
    """--campaigns writes messages and decisions beside the output, the same bytes on every run."""
    lines = make_stream(400, seed=13)
    profiles = [orjson.dumps({"event_id": f"p{i}", "contact_id": f"c{i}", "type": "profile_updated", "ts": T0 - 1,
                              "properties": {"first_name": "Ana", "email": f"c{i}@example.com", "phone": "+33600000000"}})
                for i in range(5)]
    runs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        _, _, stderr = run_replay(d, profiles + lines, format_ms(T0 + 2000 * H), "--campaigns", "builtin")
        runs.append(((d / "changes.messages.jsonl").read_bytes(), (d / "changes.decisions.jsonl").read_bytes()))
        assert "messages" in stderr
    assert runs[0] == runs[1]
    messages = [orjson.loads(x) for x in runs[0][0].splitlines()]
    decisions = [orjson.loads(x) for x in runs[0][1].splitlines()]
    assert messages and decisions
    assert len({m["message_id"] for m in messages}) == len(messages)
    assert all(m["to"] and m["body"] for m in messages)
    assert {d["outcome"] for d in decisions} <= {"skipped_consent", "skipped_duplicate", "skipped_stale", "capped",
                                                 "deferred", "cancelled", "failed"}
