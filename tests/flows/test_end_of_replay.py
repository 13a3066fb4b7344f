"""The end of a replay: time walks to `--until` in steps, so the changes due after the last
event come out in bounded chunks (not one list of all of them), with the same result."""

from __future__ import annotations

import orjson

from flows.config import FlowConfig
from flows.logic import IntakeLogic, RawBatch, ShardLogic
from state.changes import Change
from state.definitions import builtin_segments
from state.program import compile_program

H = 3_600_000
T0 = 1_795_000_000_000
UNTIL = T0 + 200 * H


def _events(n: int) -> list:
    """n contacts with email consent who open an email, 25 min apart: n exits 72 h later."""
    out = []
    for i in range(n):
        cid = f"c{i}"
        out.append(orjson.dumps({"event_id": f"s{i}", "contact_id": cid, "type": "consent_changed", "ts": T0 + i * 1_500_000,
                                 "properties": {"channel": "email", "status": "subscribed"}}))
        out.append(orjson.dumps({"event_id": f"o{i}", "contact_id": cid, "type": "email_open", "ts": T0 + i * 1_500_000 + 1}))
    return [(raw, k + 1) for k, raw in enumerate(out)]


def _run(ticks: int) -> tuple[list[Change], int]:
    cfg = FlowConfig(compile_program(builtin_segments()), until_ms=UNTIL, snapshots=False)
    intake, shard = IntakeLogic(cfg, None), ShardLogic(cfg, None)
    batches = [RawBatch("0", _events(300), {"file": "x"}, "line", 0)]
    batches += [RawBatch("0", [], {"file": "x"}, "line", 0, None, (k, ticks)) for k in range(1, ticks + 1)]
    changes, largest = [], 0
    for b in batches:
        routed, _ = intake.on_batch([b])
        for _, (_, shard_batch) in routed:
            out, _ = shard.on_batch([shard_batch])
            changes += out
            if b.tick is not None:
                largest = max(largest, len(out))
    assert intake.intake.frontier == UNTIL  # the last tick is `until` itself
    out, _ = shard.on_eof()
    return changes + out, max(largest, len(out))


def test_ticks_split_the_end_without_changing_it():
    at_once, largest_at_once = _run(ticks=1)
    stepped, largest_stepped = _run(ticks=64)
    assert stepped == at_once
    assert sum(c.direction == "exit" and c.cause_event_id is None for c in stepped) == 300
    # The input ends at +125 h: the exits of the last 72 h of opens are due after it.
    due_after_input = sum(c.at > T0 + 299 * 1_500_000 for c in at_once)
    assert due_after_input > 150
    assert largest_at_once >= due_after_input  # one tick: all of them in one list
    assert largest_stepped <= due_after_input // 10  # 64 ticks: a few at a time
