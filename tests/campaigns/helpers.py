"""Drive a real `Shard` + `CampaignEngine` the way a flow does, with chosen batch cuts."""

from __future__ import annotations

import pickle
import textwrap
from typing import Iterable

import yaml

from state.campaigns import CampaignEngine, Campaigns, Decision, Message, parse_campaigns
from state.changes import Change
from state.events import Event
from state.program import compile_program
from state.shard import Shard
from state.timeutil import NEVER, parse_ts

H = 3_600_000
M = 60_000
D = 24 * H
T0 = parse_ts("2026-11-20T09:00:00Z")  # a Friday, 10:00 in Paris


def campaigns(text: str, file: str = "test.yaml", **kw) -> Campaigns:
    text = textwrap.dedent(text)
    return parse_campaigns(yaml.safe_load(text), file, text=text, **kw)


class Rig:
    """A shard and its engine; `feed` is one flow batch (events, then time up to `watermark`)."""

    def __init__(self, camps: Campaigns, now_ms: int | None = None) -> None:
        self.camps = camps
        self.program = compile_program(list(camps.segments), camps.required_keep())
        self.shard = Shard(self.program, 1 << 12)
        self.engine = CampaignEngine(camps)
        self.now_ms = now_ms
        self.frontier = NEVER
        self.changes: list[Change] = []
        self.out: list[Decision | Message] = []
        self._n = 0

    def feed(self, events: Iterable[Event], watermark: int | None = None, settled: int | None = None) -> list:
        events = list(events)
        if events:
            self.frontier = max(self.frontier, max(e.ts for e in events))
        wm = self.frontier if watermark is None else watermark
        changes, out = self.engine.process(self.shard, events, wm, now_ms=self.now_ms, settled=settled)
        self.changes += changes
        self.out += out
        return out

    def until(self, t: int) -> list:
        """Let event time run to `t` inclusive (like the end of `espresso replay`)."""
        return self.feed([], t + 1, settled=t)

    def restore(self) -> None:
        """Pickle both snapshots and continue from copies, as after a crash."""
        shard_state = pickle.loads(pickle.dumps(self.shard.snapshot()))
        engine_state = pickle.loads(pickle.dumps(self.engine.snapshot()))
        self.shard = Shard(self.program, 1 << 12, shard_state)
        self.engine = CampaignEngine(self.camps, engine_state)

    def ev(self, cid: str, etype: str, ts: int, **props) -> Event:
        self._n += 1
        return Event(f"e{self._n}", cid, etype, ts, props)

    # -- reading results ----------------------------------------------------------
    def messages(self, campaign: str | None = None) -> list[Message]:
        return [o for o in self.out if isinstance(o, Message) and (campaign is None or o.campaign_id == campaign)]

    def decisions(self, campaign: str | None = None, outcome: str | None = None) -> list[Decision]:
        return [o for o in self.out if isinstance(o, Decision)
                and (campaign is None or o.campaign_id == campaign) and (outcome is None or o.outcome == outcome)]


def subscribe(rig: Rig, cid: str, ts: int, *channels: str, **profile) -> list[Event]:
    """Events giving `cid` consent on `channels` and a profile with addresses."""
    base = {"email": f"{cid}@example.com", "phone": "+33600000000", "push_token": f"tok-{cid}"}
    out = [rig.ev(cid, "profile_updated", ts, **{**base, **profile})]
    out += [rig.ev(cid, "consent_changed", ts, channel=ch, status="subscribed") for ch in channels]
    return out


def run(camps: Campaigns, events: list[Event], until: int, cuts: Iterable[int] = (),
        restore_at: Iterable[int] = ()) -> tuple[list[Change], list]:
    """Replay `events` in batches split at `cuts`, restoring from snapshots at `restore_at`."""
    rig = Rig(camps)
    restore = set(restore_at)
    bounds = sorted({0, len(events), *[c for c in (*cuts, *restore) if 0 < c < len(events)]})
    for lo, hi in zip(bounds, bounds[1:]):
        if lo in restore:
            rig.restore()
        rig.feed(events[lo:hi])
    rig.until(max(until, rig.frontier))
    return rig.changes, rig.out
