"""Shard snapshots that carry only what changed since a base (flows/logic.py): a shard that
stops at any epoch and resumes from its last snapshot and its base (kept by the `bases` step)
writes exactly what a shard that never stopped writes, whether or not the base is restored
before its first batch, and across new bases (compactions)."""

from __future__ import annotations

import random

import orjson
import pytest

from flows import logic
from flows.config import FlowConfig
from flows.logic import RESTORED, BaseItem, BaseLogic, IntakeLogic, RawBatch, ShardLogic
from state.definitions import builtin_segments
from state.program import compile_program
from state.blobs import unpack
from state.shard import ShardDelta

H = 3_600_000
T0 = 1_795_000_000_000


def _records(seed: int, n: int, contacts: int) -> list:
    rnd = random.Random(seed)
    out, ts = [], T0
    for k in range(n):
        ts += rnd.choice([0, 1, 1000, 600_000, 2 * H])
        etype = rnd.choice(["email_open", "email_click", "order_placed", "consent_changed", "sms_click"])
        props = {"channel": rnd.choice(["email", "sms"]), "status": "subscribed"} \
            if etype == "consent_changed" else {}
        out.append((orjson.dumps({"event_id": f"e{k}", "contact_id": f"c{rnd.randrange(contacts)}", "type": etype,
                                  "ts": ts, "properties": props}), k + 1))
    return out


def _batches(seed: int) -> list:
    """The shard batches the intake makes of the input, 50 records at a time."""
    cfg = FlowConfig(compile_program(builtin_segments()), until_ms=T0 + 2000 * H)
    intake = IntakeLogic(cfg, None)
    records = _records(seed, 3000, 400)
    out = []
    for i in range(0, len(records), 50):
        routed, _ = intake.on_batch([RawBatch("0", records[i:i + 50], {"file": "x"}, "line", 0)])
        out += [sb for _, (_, sb) in routed]
    return out


class Bytewax:
    """What Bytewax does for the two steps, by hand: items to the bases step, a snapshot of
    each at the end of every epoch, and on a restart the last ones given back."""

    def __init__(self, cfg: FlowConfig) -> None:
        self.cfg = cfg
        self.shard_snap: bytes | None = None
        self.base_snap: BaseItem | None = None
        self.base = BaseLogic(None)
        self.shard = ShardLogic(cfg, None)
        self.woken = False

    def feed(self, batch) -> list:
        out, _ = self.shard.on_batch([batch])
        bases = [x for x in out if isinstance(x, BaseItem)]
        if bases:
            self.base.on_batch(bases)
            self.woken = True
        return [x for x in out if not isinstance(x, BaseItem)]

    def end_epoch(self) -> None:
        self.shard_snap = self.shard.snapshot()
        if self.woken:
            self.base_snap = self.base.snapshot()
            self.woken = False

    def restart(self, base_first: bool) -> None:
        RESTORED.clear()
        self.woken = False  # what the crashed epoch did is lost
        if base_first:
            self.base = BaseLogic(self.base_snap)
            self.shard = ShardLogic(self.cfg, self.shard_snap)
        else:
            self.shard = ShardLogic(self.cfg, self.shard_snap)
            self.base = BaseLogic(self.base_snap)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_shard_resumed_at_any_epoch_goes_on_exactly(seed, monkeypatch):
    # new bases often, on this small shard
    cfg = FlowConfig(compile_program(builtin_segments()), until_ms=T0 + 2000 * H, compact_min_rows=20)
    batches = _batches(seed)
    straight = Bytewax(cfg)
    want = [c for b in batches for c in straight.feed(b)]
    rnd = random.Random(seed)
    run = Bytewax(cfg)
    got: list = []
    i, snap_at, deltas, bases = 0, 0, 0, set()
    while i < len(batches):
        got += run.feed(batches[i])
        i += 1
        if rnd.random() < 0.3:
            run.end_epoch()
            snap_at, got_at = i, len(got)
            part = unpack(run.shard_snap)[2]
            deltas += isinstance(part, ShardDelta)
            if run.base_snap is not None:
                bases.add(run.base_snap.base_id)
        if rnd.random() < 0.1 and run.shard_snap is not None:  # a crash: back to the last epoch
            run.restart(base_first=rnd.random() < 0.5)
            i, got = snap_at, got[:got_at]
            if rnd.random() < 0.5:  # an epoch closes before the base is restored
                if run.shard._awaiting is not None:
                    saved = RESTORED.copy()
                    RESTORED.clear()
                    got += run.feed(batches[i])  # waits for the base
                    i += 1
                    run.end_epoch()
                    snap_at, got_at = i, len(got)
                    RESTORED.update(saved)
    assert got == want and len(want) > 100
    assert deltas > 3 and len(bases) > 2  # snapshots of changes, and several bases


def test_a_base_that_never_comes_stops_the_flow_with_a_reason(monkeypatch):
    cfg = FlowConfig(compile_program(builtin_segments()), until_ms=T0 + 2000 * H)
    run = Bytewax(cfg)
    for b in _batches(5)[:20]:
        run.feed(b)
    run.end_epoch()
    RESTORED.clear()
    monkeypatch.setattr(logic, "BASE_WAIT_S", 0.0)
    shard = ShardLogic(cfg, run.shard_snap)
    with pytest.raises(Exception, match="base snapshot .* was not restored"):
        shard.on_batch([])


def test_without_recovery_no_base_is_written():
    cfg = FlowConfig(compile_program(builtin_segments()), until_ms=T0 + 2000 * H, snapshots=False)
    shard = ShardLogic(cfg, None)
    out = [x for b in _batches(6) for x in shard.on_batch([b])[0]]
    assert out and not any(isinstance(x, BaseItem) for x in out) and shard.snapshot() is None


def test_at_the_end_of_live_input_a_shard_sends_its_base_even_with_input_kept_waiting():
    """The `bases` step is woken at the end of input and has nothing to write unless the shard
    sends a base then, also when the shard's first act is to process input it kept while its
    base was awaited."""
    from dataclasses import replace

    from flows.config import LIVE

    replay_cfg = FlowConfig(compile_program(builtin_segments()), until_ms=T0 + 2000 * H)
    batches = _batches(7)
    run = Bytewax(replay_cfg)
    for b in batches[:10]:
        run.feed(b)
    run.end_epoch()
    RESTORED.clear()
    live = ShardLogic(replace(replay_cfg, mode=LIVE), run.shard_snap)
    live.on_batch([batches[10]])  # no base yet: kept
    assert live._waiting
    BaseLogic(run.base_snap)
    out, _ = live.on_eof()
    assert [x for x in out if isinstance(x, BaseItem)] and not live._waiting
