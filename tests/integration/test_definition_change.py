"""Changing segment definitions on a running deployment (issue 16): `espresso run` restarted
on its recovery directory with a new segment and an edited one. Unchanged segments keep their
state and write nothing twice; the new and edited segments switch from the kept facts and,
from then on, equal `espresso replay` of the same events with the new definitions; a segment
that would need history the state does not hold stops the start in one line."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from state.timeutil import format_ms, parse_ts
from tests.integration.live import (D, H, ROOT, by_id, change_key, members_at, produce, read_all, replay_changes,
                                    run_to_end, shop_events, tick, write_segments)

pytestmark = pytest.mark.integration

T0 = parse_ts("2026-03-02T00:00:00Z")
PARTS = 2
NEW = """
include_builtin: true
segments:
  - id: opened-24h
    when:
      all:
        - consent: {channel: email}
        - event: {type: email_open, at_least: 1, within: 24h}
"""
EDITED_ESPRESSO = """
segments:
  - id: email-espresso
    when:
      all:
        - consent: {channel: email}
        - any:
            - event: {type: email_open, at_least: 1, within: 36h}
            - event: {type: email_click, at_least: 1, within: 36h}
        - event: {type: order_placed, exactly: 0, within: 36h}
  - id: sms-espresso
    when:
      all:
        - consent: {channel: sms}
        - event: {type: sms_click, at_least: 1, within: 72h}
        - event: {type: order_placed, exactly: 0, within: 72h}
  - id: push-espresso
    when:
      all:
        - consent: {channel: push}
        - event: {type: push_open, at_least: 1, within: 72h}
        - event: {type: order_placed, exactly: 0, within: 72h}
  - id: opened-24h
    when:
      all:
        - consent: {channel: email}
        - event: {type: email_open, at_least: 1, within: 24h}
"""


def test_new_and_edited_segments_switch_on_kept_state(kafka_bootstrap, kafka_topic_factory, tmp_path):
    events = shop_events(150, 2500, seed=3, t0=T0, span_ms=8 * D)
    cut = len(events) // 2
    later = [dict(e, ts=format_ms(parse_ts(e["ts"]) + 2 * H)) for e in events[cut:]]  # 2 h with no event
    switch = parse_ts(later[0]["ts"]) - 1  # every shard has switched by then, and nothing happened since
    end = parse_ts(later[-1]["ts"]) + 5 * D
    topics = (kafka_topic_factory(PARTS, prefix="events"), kafka_topic_factory(PARTS, prefix="changes"),
              kafka_topic_factory(1, prefix="dlq"))
    recovery = tmp_path / "recovery"
    args = ("--recovery-dir", str(recovery), "--allowed-lateness", "0s", "--epoch-interval", "300ms")
    produce(kafka_bootstrap, topics[0], events[:cut])
    run_to_end(tmp_path, kafka_bootstrap, topics, *args)
    first = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]

    # a new segment on kept facts, and email-espresso edited to 36 h
    edited = write_segments(tmp_path, EDITED_ESPRESSO)
    produce(kafka_bootstrap, topics[0], later)
    ticks = [tick(p, end) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(kafka_bootstrap, topics[0], [t], partition=p)
    run_to_end(tmp_path, kafka_bootstrap, topics, *args, "--segments", str(edited))
    every = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]
    second = every[len(first):]

    switched = [c for c in second if c["cause"] == {"kind": "definition_changed"}]
    assert switched and {c["segment_id"] for c in switched} <= {"email-espresso", "opened-24h"}
    # each shard switches at the time its partition had reached, before any event of part 2
    assert all(T0 < parse_ts(c["at"]) < switch for c in switched), sorted({c["at"] for c in switched})

    old = replay_changes(tmp_path, events[:cut] + later + ticks, end)  # built-in definitions throughout
    new = replay_changes(tmp_path, events[:cut] + later + ticks, end, segments=edited)
    # unchanged segments: exactly the changes of the old definitions, none written twice (a
    # repeat after the restart would carry its change_id; `seq` counts the contact's changes in
    # every segment, so it moves on with the switch's)
    for seg in ("sms-espresso", "push-espresso"):
        live = list(by_id(c for c in every if c["segment_id"] == seg).values())
        want = [c for c in old if c["segment_id"] == seg]
        assert sorted(map(change_key, live)) == sorted(map(change_key, want)), seg
        assert len(set(map(change_key, live))) == len(live) > 20, seg
    # new and edited segments: from the switch on, the new definitions' memberships and changes
    for seg in ("email-espresso", "opened-24h"):
        live = [c for c in every if c["segment_id"] == seg and c["cause"] != {"kind": "definition_changed"}]
        live_all = [c for c in every if c["segment_id"] == seg]
        want = [c for c in new if c["segment_id"] == seg]
        for at in (switch, parse_ts(later[len(later) // 2]["ts"]), end):
            assert members_at(live_all, seg, at) == members_at(want, seg, at), (seg, format_ms(at))
        after = sorted(change_key(c) for c in live if parse_ts(c["at"]) > switch)
        assert after == sorted(change_key(c) for c in want if parse_ts(c["at"]) > switch), seg
        assert len(after) > 20, seg


def test_a_segment_needing_history_not_kept_stops_the_start_in_one_line(kafka_bootstrap, kafka_topic_factory,
                                                                          tmp_path):
    events = shop_events(30, 300, seed=4, t0=T0, span_ms=2 * D)
    topics = (kafka_topic_factory(1, prefix="events"), kafka_topic_factory(1, prefix="changes"),
              kafka_topic_factory(1, prefix="dlq"))
    recovery = tmp_path / "recovery"
    produce(kafka_bootstrap, topics[0], events)
    run_to_end(tmp_path, kafka_bootstrap, topics, "--recovery-dir", str(recovery))
    spent = write_segments(tmp_path, """
include_builtin: true
segments:
  - id: spent-100
    when:
      lifetime: {type: order_placed, aggregate: sum, property: value, op: ">=", value: 100}
""")
    proc = subprocess.run([sys.executable, "-m", "commands.cli", "run", "--bootstrap-servers", kafka_bootstrap,
                           "--input-topic", topics[0], "--output-topic", topics[1], "--dlq-topic", topics[2],
                           "--metrics-port", "-1", "--recovery-dir", str(recovery), "--segments", str(spent),
                           "--stop-at-end"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    err = lines[-1]
    assert "Traceback" not in proc.stderr
    assert str(spent) in err and "spent-100" in err and "lifetime sum" in err and "empty recovery directory" in err
