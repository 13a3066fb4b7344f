"""The campaign policy engine: what to send and when, decided in event time.

One `CampaignEngine` lives beside each `Shard` and shares its event-time watermark. It
turns segment changes into messages and decision records; every rule below depends only
on the contact's own history and event time, so a replay makes the same decisions.

Per contact, decisions happen in time order. At one instant, the candidates (new triggers
and pending messages due then) are decided by priority (highest first, then campaign id),
each seeing the sends decided before it. For every candidate, in this order:

1. staleness (live only, `now_ms` given): decided more than `max_staleness` behind the wall
   clock -> `skipped_stale` (or sent, marked stale, with `allow_stale`);
2. re-entry: `once` / `once_per` already sent -> `skipped_duplicate` (reason `reentry:...`);
3. consent for the channel, read from the shard now -> `skipped_consent` unless `subscribed`;
4. an address (`email`, `phone` or `push_token` in the profile) -> else `failed: no_address`;
5. quiet hours in the contact's time zone -> `deferred` to the next allowed instant;
6. frequency caps -> `deferred` to when the cap frees (policy `defer`, within `max_defer`)
   or `capped`;
7. rendering -> `failed: template_error` if the data breaks a template, else the message.

A campaign with a `delay` checks re-entry and consent when triggered (a refused message is
decided at once), is recorded `deferred` (reason `delay`), and is decided as above when due.
A pending (delayed or deferred) message is `cancelled` when its contact leaves the trigger
segment (enter triggers) or re-enters it (exit triggers) first, and `skipped_consent` when
an unsubscribe for its channel is applied while it waits (`process`), whatever follows.

Exactness: decisions read consent, profile and items from the shard. `process()` applies
events to the shard itself and advances shard and engine to each instant where campaign
state changes (consent, profile, items events), so what a decision reads is the contact's
state at the decision's instant, for any batching of in-order input. `on_changes` and
`advance` are the underlying steps for callers that drive the shard themselves; they then
read the shard's latest state (what the contact wants now, which is what matters when
delivering live).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import xxhash

from ..changes import Change, change_id as make_change_id
from ..events import Event
from ..program import CONSENT_TYPE, SCHED
from ..shard import Shard
from ..timeutil import NEVER, format_ms
from .model import ADDRESS_FIELD, TIMEZONE_FIELD, Campaign, Campaigns, Variant
from .quiet import next_allowed, zone
from .records import OUTCOMES, Decision, Message, message_id
from .templates import render

__all__ = ["CampaignEngine", "CampaignState", "Pending", "Output"]

Output = Decision | Message
_xxh64 = xxhash.xxh3_64_intdigest


class Pending(NamedTuple):
    """A message waiting for its instant (after a delay, quiet hours or a cap)."""

    due: int
    campaign_id: str
    contact_id: str
    message_id: str
    segment_id: str
    change_id: str
    trigger_at: int
    first_due: int  # when it was first due (trigger + delay): `max_defer` counts from here
    seq: int  # unique, for a total order in the heap


@dataclass
class CampaignState:
    """Snapshot of an engine: plain data, pickle-able, written with the shard's snapshot.

    Per contact only what policies need: its decision clock, recent sends (for caps, only
    those inside the longest cap window) and the last send per campaign (for once/once_per).
    """

    fingerprint: str
    watermark: int
    settled: int
    seq: int
    contacts: dict  # contact_id -> (clock, ((send ms, channel), ...), {campaign_id: last send ms})
    pending: list  # [Pending]
    stats: dict = field(default_factory=dict)


class _Memo:
    __slots__ = ("clock", "sends", "fired", "pending", "expires")

    def __init__(self, clock: int = NEVER, sends: list | None = None, fired: dict | None = None) -> None:
        self.clock = clock
        self.sends: list[tuple[int, str]] = sends if sends is not None else []
        self.fired: dict[str, int] = fired if fired is not None else {}
        self.pending: dict[str, Pending] = {}
        self.expires = NEVER  # last instant pushed on the engine's expiry heap for this contact


class CampaignEngine:
    """Campaign decisions for the contacts of one shard.

    Per batch, call `process(shard, events, watermark, now_ms=..., settled=...)` instead of
    `shard.apply` + `shard.advance`: it returns the shard's changes and
    the campaign outputs. `next_due()` joins `shard.next_due()` for timers; `snapshot()`
    goes with `shard.snapshot()`.
    """

    def __init__(self, campaigns: Campaigns, state: CampaignState | None = None) -> None:
        self.campaigns = campaigns
        self._by_id = dict(campaigns.by_id)
        self._triggers: dict[tuple[str, str], list[Campaign]] = {}
        self._cancels: dict[tuple[str, str], list[str]] = {}
        for c in sorted(campaigns.campaigns, key=lambda c: (-c.priority, c.id)):
            self._triggers.setdefault((c.segment, c.on), []).append(c)
            other = "exit" if c.on == "enter" else "enter"
            self._cancels.setdefault((c.segment, other), []).append(c.id)
        self._touch = set(self._triggers) | set(self._cancels)
        self._seg_names = {s.id: s.name for s in campaigns.segments}
        self._caps = campaigns.caps
        self._window = max((c.per_ms for c in self._caps), default=0)
        self._default_tz = zone(campaigns.default_timezone)
        self._keep = campaigns.required_keep()
        self._state_types = campaigns.state_types()
        self._checked: object = None
        self.memos: dict[str, _Memo] = {}
        self.heap: list[tuple] = []
        self._expiry: list[tuple[int, str]] = []  # (when a contact's memo may be empty, contact)
        self._once_per = {c.id: c.reentry_ms for c in campaigns.campaigns if c.reentry == "once_per"}
        if state is None:
            self.watermark = self.settled = NEVER
            self.seq = 0
            self.stats = {o: 0 for o in OUTCOMES}
            return
        # Definitions may have changed since the snapshot: campaigns are matched by id and
        # pending messages of campaigns that no longer exist are dropped.
        self.watermark, self.settled, self.seq = state.watermark, state.settled, state.seq
        self.stats = {o: 0 for o in OUTCOMES} | dict(state.stats)
        for cid, (clock, sends, fired) in state.contacts.items():
            self.memos[cid] = _Memo(clock, list(sends), {k: v for k, v in fired.items() if k in self._by_id})
        for p in state.pending:
            c = self._by_id.get(p.campaign_id)
            if c is None:
                continue
            memo = self.memos.setdefault(p.contact_id, _Memo())
            memo.pending[p.campaign_id] = p
            self.heap.append((p.due, p.contact_id, -c.priority, p.campaign_id, p.seq, p))
        heapq.heapify(self.heap)
        # Idle contacts are looked at once at the next advance, then as their memories expire.
        self._expiry = [(NEVER, cid) for cid, m in self.memos.items() if not m.pending]

    # -- configuration ----------------------------------------------------------
    def required_keep(self):
        """The `state.program.Keep` to pass to `compile_program` for this engine's shards."""
        return self._keep

    def state_types(self) -> frozenset[str]:
        """Event types after which `process` lets decisions catch up before applying them."""
        return self._state_types

    def _check(self, shard: Shard) -> None:
        program = shard.program
        if self._checked is program:
            return
        keep = self._keep
        missing = ([f"consent {c}" for c in keep.consent_channels if c not in program.consent_cols]
                   + [f"profile {f}" for f in keep.profile_fields if f not in program.profile_cols]
                   + [f"items of {t}" for t in keep.items_of if t not in program.items_cols])
        if missing:
            raise ValueError("the shard does not keep what campaigns need (" + ", ".join(missing)
                             + "): compile the segments with compile_program(segments, engine.required_keep())")
        self._checked = program

    # -- state ------------------------------------------------------------------
    def next_due(self) -> int | None:
        """Earliest event time at which a pending message is due (None: nothing pending)."""
        heap = self.heap
        while heap:
            p = heap[0][-1]
            memo = self.memos.get(p.contact_id)
            if memo is not None and memo.pending.get(p.campaign_id) is p:
                return p.due
            heapq.heappop(heap)
        return None

    def pending_count(self) -> int:
        return sum(len(m.pending) for m in self.memos.values())

    def snapshot(self) -> CampaignState:
        contacts = {cid: (m.clock, tuple(m.sends), dict(m.fired)) for cid, m in self.memos.items()}
        pending = [p for m in self.memos.values() for p in m.pending.values()]
        return CampaignState(self.campaigns.fingerprint, self.watermark, self.settled, self.seq,
                             contacts, pending, dict(self.stats))

    # -- the batch step a flow calls ------------------------------------------------
    def process(self, shard: Shard, events: Sequence[Event], watermark: int, *, now_ms: int | None = None,
                settled: int | None = None) -> tuple[list[Change], list[Output]]:
        """Apply `events` to `shard`, advance both to `watermark` (contacts settled by `settled`).

        Returns (segment changes, campaign outputs). The changes are exactly those of
        `shard.apply(events)` and `shard.advance(watermark, settled)`: the shard is only
        advanced in between to instants no remaining event of the batch precedes.
        `now_ms` is the wall clock in live mode (staleness guard), None in replay.
        """
        self._check(shard)
        changes: list[Change] = []
        out: list[Output] = []
        start = 0
        types = self._state_types
        live = now_ms is not None
        if types and events:
            floors = self._floors(events, shard, live=live)
            touched: set[str] = set()  # contacts with events in events[start:i]
            for i, ev in enumerate(events):
                etype = ev[2]
                if etype not in types:
                    touched.add(ev[1])
                    continue
                x = min(ev[3] if floors is None else floors[i], watermark)
                if x > self.settled and self._at_risk(ev[1], x, shard, touched):
                    if i > start:
                        self._take(shard.apply(events[start:i]), shard, now_ms, changes, out)
                        start = i
                    self._take(shard.advance(x), shard, now_ms, changes, out)
                    out.extend(self.advance(x, shard, now_ms))
                    self.settled = x
                    touched.clear()
                if live and ev[3] > x and self._at_risk(ev[1], ev[3], shard, touched):
                    # The watermark trails by the allowed lateness, but this contact's own
                    # decisions before its event must read its state before the event, as in
                    # replay: catch this contact up alone (its events are in order).
                    if i > start:
                        self._take(shard.apply(events[start:i]), shard, now_ms, changes, out)
                        start = i
                    self._take(shard.advance_contact(ev[1], ev[3]), shard, now_ms, changes, out)
                    memo = self.memos.get(ev[1])
                    if memo is not None and memo.pending:
                        self._catch_up(ev[1], ev[3], memo, shard.row_of(ev[1]), shard, now_ms, out)
                touched.add(ev[1])
                if etype == CONSENT_TYPE and ev[3] >= self.settled:
                    props = ev[4]
                    if props.get("status") == "unsubscribed" and self._waiting(ev[1], props.get("channel")):
                        self._take(shard.apply(events[start:i + 1]), shard, now_ms, changes, out)
                        start = i + 1
                        touched.clear()
                        self._unsubscribed(ev[1], props.get("channel"), ev[3], shard, out)
        if start < len(events):
            self._take(shard.apply(events[start:] if start else events), shard, now_ms, changes, out)
        self._take(shard.advance(watermark, settled), shard, now_ms, changes, out)
        out.extend(self.advance(watermark, shard, now_ms))
        if watermark > self.settled:
            self.settled = watermark
        return changes, out

    def _take(self, ch: list[Change], shard: Shard, now_ms: int | None, changes: list, out: list) -> None:
        if ch:
            changes.extend(ch)
            out.extend(self.on_changes(ch, shard, now_ms))

    def _at_risk(self, cid: str, x: int, shard: Shard, touched: set[str]) -> bool:
        """Could a decision about `cid` fall before `x`? Then it must be made before the
        contact's next consent/profile/items event is applied.

        Yes when the contact has a message waiting, or events not yet evaluated, or a
        time-driven change due before `x` (read from the shard's schedule column).
        """
        if cid in touched:
            return True
        memo = self.memos.get(cid)
        if memo is not None and memo.pending:
            return True
        row = shard.row_of(cid)
        if row is None:
            return False
        return row in shard.pending or shard.I[SCHED][row] < x

    @staticmethod
    def _floors(events: Sequence[Event], shard: Shard, live: bool) -> list[int] | None:
        """Per position, the earliest time of an event at or after it that the shard may still
        apply as new; None when the batch is in time order (then it is the event's own time).

        Repeats of an event id seen earlier in the batch are redeliveries. In replay, where
        input is in time order by contract, so is every event older than one before it in the
        batch or than its contact's clock (the shard ignores it or makes it a correction).
        """
        prev = None
        for ev in events:
            if prev is not None and ev[3] < prev:
                break
            prev = ev[3]
        else:
            return None
        n = len(events)
        ignore = [False] * n
        seen: set[str] = set()
        top = None
        for i, ev in enumerate(events):
            ts = ev[3]
            if ev[0] in seen:
                ignore[i] = True
            elif not live:
                if top is not None and ts < top:
                    ignore[i] = True
                else:
                    row = shard.row_of(ev[1])
                    ignore[i] = row is not None and ts < shard.clock(row)
            seen.add(ev[0])
            if top is None or ts > top:
                top = ts
        floors = [0] * n
        low = 1 << 62
        for i in range(n - 1, -1, -1):
            ts = events[i][3]
            if not ignore[i] and ts < low:
                low = ts
            floors[i] = low
        return floors

    def _waiting(self, contact_id: str, channel: object) -> bool:
        memo = self.memos.get(contact_id)
        if memo is None or not memo.pending:
            return False
        return any(self._by_id[p.campaign_id].channel == channel for p in memo.pending.values())

    def _unsubscribed(self, contact_id: str, channel: str, ts: int, shard: Shard, out: list) -> None:
        """An unsubscribe was applied: its channel's waiting messages will not go out."""
        row = shard.row_of(contact_id)
        if row is None or shard.consent(row, channel)[0] != "unsubscribed":
            return  # an older event, or outweighed by a newer consent
        memo = self.memos.get(contact_id)
        if memo is None:
            return
        t = max(ts, memo.clock)
        for p in sorted(memo.pending.values(), key=lambda p: (p.due, p.campaign_id)):
            c = self._by_id[p.campaign_id]
            if c.channel == channel:
                del memo.pending[p.campaign_id]
                out.append(self._decision(p, c, "skipped_consent", "unsubscribed_while_pending", t))
        memo.clock = t

    # -- the two underlying steps ---------------------------------------------------
    def on_changes(self, changes: Sequence[Change], shard: Shard, now_ms: int | None = None) -> list[Output]:
        """Decide what the segment changes trigger or cancel (immediate messages go out now)."""
        out: list[Output] = []
        if not changes:
            return out
        self._check(shard)
        touch, memos = self._touch, self.memos
        i, n = 0, len(changes)
        while i < n:
            ch = changes[i]
            cid, at = ch.contact_id, ch.at
            j = i + 1
            while j < n and changes[j].contact_id == cid and changes[j].at == at:
                j += 1
            group = changes[i:j]
            i = j
            if not any((c.segment_id, c.direction) in touch for c in group):
                continue
            self._instant(cid, at, group, memos.get(cid), shard, now_ms, out)
        return out

    def advance(self, watermark: int, shard: Shard, now_ms: int | None = None) -> list[Output]:
        """Decide every pending message due strictly before `watermark`, at its own instant."""
        out: list[Output] = []
        self._check(shard)
        heap = self.heap
        while heap and heap[0][0] < watermark:
            p = heapq.heappop(heap)[-1]
            memo = self.memos.get(p.contact_id)
            if memo is None or memo.pending.get(p.campaign_id) is not p:
                continue
            group = [p]
            while heap and heap[0][0] == p.due and heap[0][1] == p.contact_id:
                q = heapq.heappop(heap)[-1]
                if memo.pending.get(q.campaign_id) is q:
                    group.append(q)
            t = max(p.due, memo.clock)
            self._decide(p.contact_id, t, group, memo, shard.row_of(p.contact_id), shard, now_ms, out)
            memo.clock = t
            self._tidy(p.contact_id, memo, t)
        if watermark > self.watermark:
            self.watermark = watermark
        self._forget(self.watermark)
        return out

    # -- decisions --------------------------------------------------------------------
    def _instant(self, cid: str, at: int, group: Sequence[Change], memo: _Memo | None, shard: Shard,
                 now_ms: int | None, out: list) -> None:
        # Never decide in the engine's past: a late correction (live) is decided now.
        t = max(at, self.watermark) if memo is None else max(at, self.watermark, memo.clock)
        row = shard.row_of(cid)
        if memo is not None and memo.pending:
            self._catch_up(cid, t, memo, row, shard, now_ms, out)
        # Leaving the trigger segment (or re-entering it, for exit triggers) cancels.
        for c in group:
            for camp_id in self._cancels.get((c.segment_id, c.direction), ()):
                p = memo.pending.pop(camp_id, None) if memo is not None else None
                if p is not None:
                    reason = "left_segment" if c.direction == "exit" else "re_entered_segment"
                    out.append(self._decision(p, self._by_id[camp_id], "cancelled", reason, t))
        now: list[Pending] = []
        for c in group:
            camps = self._triggers.get((c.segment_id, c.direction))
            if not camps:
                continue
            chid = make_change_id(c.contact_id, c.segment_id, c.direction, c.at, c.seq)
            for camp in camps:
                self.seq += 1
                due = t + camp.delay_ms
                p = Pending(due, camp.id, cid, message_id(chid, camp.id), c.segment_id, chid, t, due, self.seq)
                if memo is None:
                    memo = self.memos[cid] = _Memo(t)
                old = memo.pending.pop(camp.id, None)
                if old is not None:
                    out.append(self._decision(old, camp, "cancelled", "superseded", t))
                if not camp.delay_ms:
                    now.append(p)
                    continue
                refusal = self._refuse(camp, p, t, memo, row, shard)
                if refusal is not None:
                    out.append(refusal)
                else:
                    self._schedule(memo, p, camp)
                    out.append(self._decision(p, camp, "deferred", "delay", t, due))
        if memo is not None:
            now.extend(p for p in memo.pending.values() if p.due == t)
            if now:
                self._decide(cid, t, now, memo, row, shard, now_ms, out)
            memo.clock = t
            self._tidy(cid, memo, t)

    def _catch_up(self, cid: str, t: int, memo: _Memo, row: int | None, shard: Shard, now_ms: int | None,
                  out: list) -> None:
        """Decide the contact's pending messages due before `t`, in time order."""
        while True:
            early = [p for p in memo.pending.values() if p.due < t]
            if not early:
                return
            due = min(p.due for p in early)
            at = max(due, memo.clock)
            self._decide(cid, at, [p for p in early if p.due == due], memo, row, shard, now_ms, out)
            memo.clock = at

    def _decide(self, cid: str, t: int, ps: list[Pending], memo: _Memo, row: int | None, shard: Shard,
                now_ms: int | None, out: list) -> None:
        ps.sort(key=lambda p: (-self._by_id[p.campaign_id].priority, p.campaign_id))
        for p in ps:
            camp = self._by_id[p.campaign_id]
            if memo.pending.get(camp.id) is p:
                del memo.pending[camp.id]
            out.append(self._one(camp, p, t, memo, row, shard, now_ms))

    def _one(self, camp: Campaign, p: Pending, t: int, memo: _Memo, row: int | None, shard: Shard,
             now_ms: int | None) -> Output:
        stale = False
        if now_ms is not None and camp.max_staleness_ms is not None and now_ms - t > camp.max_staleness_ms:
            if not camp.allow_stale:
                return self._decision(p, camp, "skipped_stale", "stale", t,
                                      detail=f"{now_ms - t} ms behind the wall clock")
            stale = True
        refusal = self._refuse(camp, p, t, memo, row, shard)
        if refusal is not None:
            return refusal
        profile = shard.profile(row)
        address = profile.get(ADDRESS_FIELD[camp.channel])
        if not isinstance(address, str) or not address:
            return self._decision(p, camp, "failed", "no_address",
                                  t, detail=f"profile has no {ADDRESS_FIELD[camp.channel]}")
        if camp.quiet is not None:
            tz = zone(profile.get(TIMEZONE_FIELD)) or self._default_tz
            u = next_allowed(t, tz, camp.quiet[0], camp.quiet[1])
            if u > t:
                return self._defer(memo, p, camp, u, "quiet_hours", t)
        blocked = self._blocked(memo, camp.channel, t)
        if blocked:
            names = ",".join(c for c, _ in blocked)
            release = max(r for _, r in blocked)
            if camp.cap_policy == "defer" and release - p.first_due <= camp.max_defer_ms:
                return self._defer(memo, p, camp, release, f"cap:{names}", t)
            return self._decision(p, camp, "capped", f"cap:{names}", t)
        variant = self._variant(camp, p.contact_id)
        ctx = self._context(camp, variant, p, profile, row, shard)
        try:
            subject = None if variant.subject is None else render(variant.subject, ctx)
            body = render(variant.body, ctx)
            html = None if variant.html is None else render(variant.html, ctx)
        except Exception as exc:  # data the load-time checks cannot see (e.g. products[0] of none)
            return self._decision(p, camp, "failed", "template_error", t, detail=str(exc)[:200])
        memo.sends.append((t, camp.channel))
        if camp.reentry != "every_time":
            memo.fired[camp.id] = t
        self.stats["sent"] += 1
        return Message(p.message_id, camp.id, camp.channel, p.contact_id, variant.name or None, p.segment_id,
                       p.change_id, t, {ADDRESS_FIELD[camp.channel]: address}, subject, body, html,
                       dict(variant.data), stale)

    def _refuse(self, camp: Campaign, p: Pending, t: int, memo: _Memo, row: int | None,
                shard: Shard) -> Decision | None:
        last = memo.fired.get(camp.id)
        if last is not None:
            if camp.reentry == "once":
                return self._decision(p, camp, "skipped_duplicate", "reentry:once", t,
                                      detail=f"sent at {format_ms(last)}")
            if camp.reentry == "once_per" and last > t - camp.reentry_ms:
                return self._decision(p, camp, "skipped_duplicate", "reentry:once_per", t,
                                      detail=f"sent at {format_ms(last)}")
        status = None if row is None else shard.consent(row, camp.channel)[0]
        if status != "subscribed":
            return self._decision(p, camp, "skipped_consent", "unsubscribed" if status else "no_consent", t)
        return None

    def _blocked(self, memo: _Memo, channel: str, t: int) -> list[tuple[str, int]]:
        """Caps a send at `t` would break, each with the instant it frees again."""
        out = []
        for cap in self._caps:
            if cap.channel is not None and cap.channel != channel:
                continue
            low = t - cap.per_ms
            times = [s for s, ch in memo.sends if s > low and (cap.channel is None or ch == cap.channel)]
            if len(times) >= cap.max:
                times.sort(reverse=True)
                out.append((cap.name, times[cap.max - 1] + cap.per_ms))
        return out

    def _defer(self, memo: _Memo, p: Pending, camp: Campaign, due: int, reason: str, t: int) -> Decision:
        self.seq += 1
        q = p._replace(due=due, seq=self.seq)
        self._schedule(memo, q, camp)
        return self._decision(q, camp, "deferred", reason, t, due)

    def _schedule(self, memo: _Memo, p: Pending, camp: Campaign) -> None:
        memo.pending[camp.id] = p
        heapq.heappush(self.heap, (p.due, p.contact_id, -camp.priority, camp.id, p.seq, p))

    def _variant(self, camp: Campaign, contact_id: str) -> Variant:
        vs = camp.variants
        if len(vs) == 1:
            return vs[0]
        h = _xxh64(f"{contact_id}\x1f{camp.id}".encode()) % camp.total_weight
        for v in vs:
            if h < v.weight:
                return v
            h -= v.weight
        return vs[-1]

    def _context(self, camp: Campaign, variant: Variant, p: Pending, profile: dict, row: int | None,
                 shard: Shard) -> dict:
        contact = dict(camp.fallbacks)
        for k, v in profile.items():
            if v is not None and v != "":
                contact[k] = v
        contact["id"] = p.contact_id
        products: list = []
        if camp.uses_products and row is not None:
            for etype in camp.products_from:
                items = shard.items(row, etype)
                if isinstance(items, list) and items:
                    products = [dict(i) if isinstance(i, dict) else i for i in items]
                    break
        return {"contact": contact,
                "segment": {"id": p.segment_id, "name": self._seg_names.get(p.segment_id) or p.segment_id},
                "change": {"at": format_ms(p.trigger_at), "direction": camp.on},
                "products": products, "variant": variant.name}

    def _decision(self, p: Pending, camp: Campaign, outcome: str, reason: str, at: int,
                  due_at: int | None = None, detail: str = "") -> Decision:
        variant = self._variant(camp, p.contact_id).name or None
        self.stats[outcome] = self.stats.get(outcome, 0) + 1
        return Decision(p.message_id, camp.id, camp.channel, p.contact_id, outcome, reason, at,
                        p.segment_id, p.change_id, variant, due_at, detail)

    # -- memory -------------------------------------------------------------------------
    def _tidy(self, cid: str, memo: _Memo, t: int) -> None:
        """Forget sends no cap can see from `t` on and once_per marks that no longer block;
        forget the contact when nothing is left, else note when that may be the case."""
        if memo.sends and memo.sends[0][0] <= t - self._window:
            low = t - self._window
            memo.sends = [s for s in memo.sends if s[0] > low]
        until = memo.sends[-1][0] + self._window if memo.sends else NEVER
        for k, last in list(memo.fired.items()):
            d = self._once_per.get(k)
            if d is None:
                if k not in self._by_id:
                    del memo.fired[k]
                    continue
                until = None  # `once` (or every_time kept by an old snapshot): remembered for good
                break
            if last <= t - d:
                del memo.fired[k]
            elif until is not None:
                until = max(until, last + d)
        if memo.pending:
            return  # looked at again when the pending messages are decided
        if until == NEVER:
            del self.memos[cid]
        elif until is not None and until != memo.expires:
            memo.expires = until
            heapq.heappush(self._expiry, (until, cid))

    def _forget(self, watermark: int) -> None:
        """Drop what idle contacts no longer need (memory only: never changes a decision)."""
        exp = self._expiry
        while exp and exp[0][0] < watermark:
            _, cid = heapq.heappop(exp)
            memo = self.memos.get(cid)
            if memo is not None:
                memo.expires = NEVER  # the next tidy pushes a fresh entry
                if not memo.pending:
                    self._tidy(cid, memo, watermark - 1)
