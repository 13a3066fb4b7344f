"""The campaign engine: runs of campaigns, decided step by step in event time.

One `CampaignEngine` lives beside each `Shard` and shares its event-time watermark. A
*run* starts when its trigger happens: a segment change (`segment:`), an event
(`event:`) or a yearly date of the profile (`date:`). Each run sends its steps at
`trigger + after`, each step decided like a message (policies below); it ends early on
an `exit_when` event, when the contact leaves the trigger segment, or on an unsubscribe
from its channel. Every rule depends only on the contact's own history and event time,
so a replay makes the same decisions. Units: `runs.py` (where runs live), `policies.py`
(caps and re-entry), `compose.py` (variants and text), `dates.py` (date instants).

Per contact, decisions happen in time order. At one instant `t`, once all the contact's
events at `t` are applied: leaving (re-entering) a trigger segment cancels; segment
changes and trigger events start runs; exit events end runs (not the one they started);
then the steps due at `t` are decided by priority (highest first, then campaign id,
then run start), each seeing the sends decided before it. For every step:

1. staleness (live only, `now_ms` given): decided more than `max_staleness` behind the wall
   clock -> `skipped_stale` (or sent, marked stale, with `allow_stale`);
2. re-entry: `once` / `once_per` already sent by another run -> `skipped_duplicate`;
3. consent for the channel, read from the shard now -> `skipped_consent` unless `subscribed`;
4. an address (`email`, `phone` or `push_token` in the profile) -> else `failed: no_address`;
5. quiet hours in the contact's time zone -> `deferred` to the next allowed instant;
6. frequency caps -> `deferred` to when the cap frees (policy `defer`, within `max_defer`)
   or `capped`;
7. rendering -> `failed: template_error` if the data breaks a template, else the message.

Then the run moves to its next step (due at `trigger + after`, never before this decision).

A one-message segment campaign with a `delay` checks re-entry and consent when triggered
(a refused message is decided at once) and is recorded `deferred` (reason `delay`).
An unsubscribe for a run's channel applied while it waits ends it (`skipped_consent`,
`unsubscribed_while_pending`) whatever follows.

Exactness: decisions read consent, profile and items from the shard. `process()` applies
events to the shard itself and advances shard and engine to each instant where campaign
state changes (consent, profile, items events), so what a decision reads is the contact's
state at the decision's instant, for any batching of in-order input. Trigger and exit
events wait in a per-contact inbox until their instant is settled, like the shard's own
evaluation. `on_changes` and `advance` are the underlying steps for callers that drive
the shard themselves.
"""

from __future__ import annotations

import heapq
from typing import Sequence

from ..changes import Change, change_id as make_change_id
from ..dedup import DEFAULT_HORIZON, SeenIds
from ..events import Event
from ..catalog import ProductBook, Watches
from ..catalog.watches import CART_TYPE, VIEW_TYPE
from ..program import CONSENT_TYPE, PROFILE_TYPE, SCHED
from ..shard import Shard
from ..timeutil import NEVER
from .attribution import Attribution
from .catalog_runs import CATALOG_RUN, CatalogRuns, campaign_of_key
from .compose import Composer
from .date_runs import DateRuns
from .ids import run_id
from .model import ADDRESS_FIELD, ORDER_TYPE, TIMEZONE_FIELD, TOUCHES, Campaign, Campaigns
from .policies import Memo
from .quiet import zone
from .records import OUTCOMES, Conversion, Decision, Message
from .runs import DATE_STEP, FREE, RunStore
from .snapshot import CampaignState, Pending, clone_seen
from .starts import RunStarts
from .steps import StepDecisions

__all__ = ["CampaignEngine", "CampaignState", "Pending", "Output"]

Output = Decision | Message | Conversion
#: Product update ids remembered per shard to drop redeliveries (~1 h of 10,000 updates/h; 256 KB).
CATALOG_DEDUP_HORIZON = 8192
_INF = 1 << 62


class CampaignEngine(RunStarts, DateRuns, StepDecisions, Attribution, CatalogRuns):
    """Campaign decisions for the contacts of one shard.

    Per batch, call `process(shard, events, watermark, now_ms=..., settled=...)` instead of
    `shard.apply` + `shard.advance`: it returns the shard's changes and the campaign
    outputs. `next_due()` joins `shard.next_due()` for timers; `snapshot()` goes with
    `shard.snapshot()`.
    """

    def __init__(self, campaigns: Campaigns, state: CampaignState | None = None, *, catalog: bool = True) -> None:
        """`catalog`: whether product updates can come (else catalog triggers keep no watches)."""
        self.campaigns = campaigns
        self.camps: list[Campaign] = list(campaigns.campaigns)
        self._index = {c.id: k for k, c in enumerate(self.camps)}
        order = sorted(range(len(self.camps)), key=lambda k: (-self.camps[k].priority, self.camps[k].id))
        self._rank = [0] * len(self.camps)
        for r, k in enumerate(order):
            self._rank[k] = r
        self._seg_triggers: dict[tuple[str, str], list[int]] = {}
        self._seg_cancels: dict[tuple[str, str], list[int]] = {}
        self._ev_triggers: dict[str, list[int]] = {}
        self._exits: dict[str, list[tuple[int, object]]] = {}
        self._dates: list[int] = []
        self._catalog: list[int] = []
        self._match_paths: list[tuple[tuple[str, ...], ...]] = []
        for k in order:
            c = self.camps[k]
            if c.segment is not None:
                self._seg_triggers.setdefault((c.segment, c.on), []).append(k)
                other = "exit" if c.on == "enter" else "enter"
                self._seg_cancels.setdefault((c.segment, other), []).append(k)
            elif c.event is not None:
                self._ev_triggers.setdefault(c.event.type, []).append(k)
            elif c.catalog is not None:
                self._catalog.append(k)
            else:
                self._dates.append(k)
            for rule in c.exits:
                self._exits.setdefault(rule.type, []).append((k, rule))
        for c in self.camps:
            self._match_paths.append(tuple(sorted({tp for r in c.exits for _, tp in r.match})))
        self._touch = set(self._seg_triggers) | set(self._seg_cancels)
        self._always_boxed = frozenset(self._ev_triggers) | frozenset(self._exits) | (
            {PROFILE_TYPE} if self._dates else frozenset())
        # attribution: touches that name a message, orders of contacts with touches or holdouts
        self._inbox_types = self._always_boxed | frozenset(TOUCHES) | {ORDER_TYPE}
        self._windows = dict(campaigns.attribution)
        self.composer = Composer({s.id: s.name for s in campaigns.segments})
        self._caps = campaigns.caps
        self._window = max((c.per_ms for c in self._caps), default=0)
        self._default_tz = zone(campaigns.default_timezone)
        self._keep = campaigns.required_keep()
        self._state_types = campaigns.state_types()
        self._checked: object = None
        self._touching_types: frozenset[str] = frozenset()
        self._once_per = {c.id: c.reentry_ms for c in self.camps if c.reentry == "once_per"}
        self.memos: dict[str, Memo] = {}
        self.runs = RunStore()
        self.inbox: dict[str, list[Event]] = {}
        self._expiry: list[tuple[int, str]] = []  # (when a contact's memo may be empty, contact)
        self.stats = {o: 0 for o in OUTCOMES}
        self.book = ProductBook()
        self.catalog_counts: dict[int, int] = {}
        #: Update ids, apart from contact event ids: every shard sees every update, and they
        #: must not push contact ids out of `seen` (a redelivery comes within an epoch or two).
        self.catalog_seen = SeenIds(CATALOG_DEDUP_HORIZON)
        self.watches = Watches(campaigns.catalog_horizon_ms()) if self._catalog and catalog else None
        self._watch_types = frozenset((VIEW_TYPE, CART_TYPE, ORDER_TYPE)) if self.watches is not None else frozenset()
        #: Date campaigns whose contacts must be scheduled from the shard's profiles at the
        #: first batch (a campaign added to a running deployment, or a fresh engine).
        self._unseeded = list(self._dates)
        #: Most contacts whose waiting triggers one `advance` decides (None: all; live flows
        #: set it so a fan-out is spread over calls); `more`: some were left for the next call.
        self.sweep_limit: int | None = None
        self.more = False
        if state is None:
            self.watermark = self.settled = NEVER
            self.seq = 0
            self.seen = SeenIds(DEFAULT_HORIZON)
            return
        self._restore(state)
        if state.catalog is not None:
            self.book = ProductBook(state.catalog[0])
            if self.watches is not None and state.catalog[1] is not None:
                self.watches = Watches(self.watches.horizon, state=state.catalog[1])
            if len(state.catalog) > 2 and state.catalog[2] is not None:
                self.catalog_seen = state.catalog[2]
        self._unseeded = [k for k in self._dates if self.camps[k].id not in state.campaign_ids]

    def _restore(self, state: CampaignState) -> None:
        # Definitions may have changed since the snapshot: campaigns are matched by id, runs
        # of campaigns that no longer exist (or steps beyond the new last one) are dropped.
        self.watermark, self.settled, self.seq = state.watermark, state.settled, state.seq
        self.stats.update(state.stats)
        if state.seen is not None:
            self.seen = state.seen
        else:
            self.seen = SeenIds(DEFAULT_HORIZON)
        remap = {i: self._index.get(c) for i, c in enumerate(state.campaign_ids)}
        for cid, row in state.contacts.items():
            clock, sends, fired = row[:3]
            fired = {k: (v if isinstance(v, tuple) else (v, 0)) for k, v in fired.items()
                     if campaign_of_key(k) in self._index}
            memo = self.memos[cid] = Memo(clock, list(sends), fired)
            if len(row) > 3:
                self._restore_attribution(memo, row[3:], remap)
        self.inbox = {cid: list(evs) for cid, evs in state.inbox.items()}
        if state.runs is not None:
            old = RunStore()
            old.__setstate__(state.runs)
            for s in range(len(old.due)):
                if old.due[s] == FREE:
                    continue
                k = self._index.get(state.campaign_ids[old.camp[s]])
                if k is None:
                    continue
                c, step = self.camps[k], old.step[s]
                if step == DATE_STEP and c.date is None or step != DATE_STEP and step >= len(c.steps):
                    continue
                self.runs.new(old.cid[s], k, step, old.start[s], old.due[s], old.rid[s], old.key[s], old.obj[s])
        for p in state.pending:  # a snapshot of the one-message engine
            k = self._index.get(p.campaign_id)
            if k is None or self.camps[k].segment is None:
                continue
            rid = run_id(p.contact_id, p.campaign_id, p.change_id)
            self.runs.new(p.contact_id, k, 0, p.trigger_at, p.due, rid, obj=p.change_id)
        for cid in self.runs.heads:
            self.memos.setdefault(cid, Memo())
        # Idle contacts are looked at once at the next advance, then as their memories expire.
        self._expiry = [(NEVER, cid) for cid in self.memos if not self.runs.has(cid)]

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
        # Decisions read the shard's columns directly (the hot path of the campaign stage).
        self._consent_col = dict(program.consent_cols)
        self._addr_col = {ch: program.profile_cols[f] for ch, f in ADDRESS_FIELD.items() if f in program.profile_cols}
        self._tz_col = program.profile_cols.get(TIMEZONE_FIELD)
        self.composer.bind(program.profile_cols)
        # Event types that can change a segment some campaign starts or cancels runs on.
        watched = {seg for seg, _ in self._touch}
        mask = sum(1 << i for i, seg in enumerate(program.segments) if seg.id in watched)
        self._touching_types = frozenset(t for t, m in program.type_masks.items() if m & mask)
        if self._unseeded:
            self._seed_dates(shard)

    # -- state ------------------------------------------------------------------
    def next_due(self) -> int | None:
        """Earliest event time at which something is due: a step, a date, an inbox instant."""
        due = self.runs.next_due()
        for evs in self.inbox.values():
            if evs and (due is None or evs[0][3] < due):
                due = evs[0][3]
        return due

    def pending_count(self) -> int:
        """Open runs waiting for a step, plus contacts' next date-trigger instants."""
        return self.runs.open

    def snapshot(self) -> CampaignState:
        contacts = {cid: (m.clock, tuple(m.sends), dict(m.fired), m.released and dict(m.released),
                          m.touches and list(m.touches), m.held and dict(m.held))
                    for cid, m in self.memos.items()}
        return CampaignState(self.campaigns.fingerprint, self.watermark, self.settled, self.seq, contacts, [],
                             dict(self.stats), self.runs.__getstate__(), tuple(c.id for c in self.camps),
                             {cid: list(evs) for cid, evs in self.inbox.items() if evs}, clone_seen(self.seen),
                             (self.book.snapshot(), None if self.watches is None else self.watches.snapshot(),
                              clone_seen(self.catalog_seen) if self._catalog else None))

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
        boxed = self._inbox_types
        if (types or boxed) and events:
            # contacts with events in events[start:i] that may change a segment campaigns watch
            touched: set[str] = set()
            touching, used, index = self._touching_types, shard.program.type_masks, shard.index
            inbox, seen = self.inbox, self.seen
            watch = self._watch_types
            for i, ev in enumerate(events):
                etype, cid = ev[2], ev[1]
                if not cid:  # a catalogue update, after every contact event of its instant
                    if i > start:
                        self._take(shard.apply(events[start:i]), shard, now_ms, changes, out)
                        touched.clear()
                    start = i + 1
                    if not self.catalog_seen.add(ev[0]):  # a redelivered update is done already
                        self._on_catalog(ev)
                    continue
                if etype in watch:
                    self._note_watch(ev)
                if etype not in types:
                    # (a contact's first event is evaluated against every segment)
                    if etype in touching or (etype in used and cid not in index):
                        touched.add(cid)
                    if etype in boxed and self._boxes(ev, cid) and not seen.add(ev[0]):
                        inbox.setdefault(cid, []).append(ev)
                    continue
                ts = ev[3]
                if self._at_risk(cid, ts, shard, touched):
                    # Decisions of this contact before its event must read its state before
                    # the event: catch the contact up alone (its events are in time order;
                    # the rest of the shard waits for the watermark, as in replay).
                    if i > start:
                        self._take(shard.apply(events[start:i]), shard, now_ms, changes, out)
                        start = i
                        touched.clear()
                    self._take(shard.advance_contact(cid, ts), shard, now_ms, changes, out)
                    self._until(cid, ts, shard, now_ms, out)
                touched.add(cid)
                box = etype in boxed and self._boxes(ev, cid)
                if box or etype == CONSENT_TYPE:
                    if seen.add(ev[0]):
                        continue  # a redelivery: it started, ended or unsubscribed nothing the first time
                    if box:
                        inbox.setdefault(cid, []).append(ev)
                if etype == CONSENT_TYPE and ts >= self.settled:
                    props = ev[4]
                    if props.get("status") == "unsubscribed" and self._waiting(cid, props.get("channel")):
                        self._take(shard.apply(events[start:i + 1]), shard, now_ms, changes, out)
                        start = i + 1
                        touched.clear()
                        self._unsubscribed(cid, props.get("channel"), ts, shard, out)
        if start < len(events):
            self._take(shard.apply(events[start:] if start else events), shard, now_ms, changes, out)
        self._take(shard.advance(watermark, settled), shard, now_ms, changes, out)
        out.extend(self.advance(watermark, shard, now_ms, settled))
        if watermark > self.settled:
            self.settled = watermark
        return changes, out

    def _take(self, ch: list[Change], shard: Shard, now_ms: int | None, changes: list, out: list) -> None:
        if ch:
            changes.extend(ch)
            out.extend(self.on_changes(ch, shard, now_ms))

    def _boxes(self, ev: Event, cid: str) -> bool:
        """Does the engine act on this event at its instant (so it waits in the inbox)?"""
        etype = ev[2]
        if etype in self._always_boxed:
            return True
        if etype in TOUCHES:
            return "message_id" in ev[4]
        return True  # an order: a touch or a holdout decided before it, in this batch too, may claim it

    def _at_risk(self, cid: str, x: int, shard: Shard, touched: set[str]) -> bool:
        """Could a decision about `cid` fall before `x`? Then it must be made before the
        contact's next consent/profile/items event is applied.

        Yes when the contact has events not yet applied or evaluated, a step or trigger
        event of its own before `x`, or a time-driven change due before `x`.
        """
        if cid in touched:
            return True
        runs = self.runs
        s = runs.heads.get(cid, -1)
        if s >= 0:
            due, nxt = runs.due, runs.nxt
            while s >= 0:
                if due[s] < x:
                    return True
                s = nxt[s]
        box = self.inbox.get(cid)
        if box and box[0][3] < x:
            return True
        row = shard.row_of(cid)
        if row is None:
            return False
        return row in shard.pending or shard.I[SCHED][row] < x

    def _waiting(self, contact_id: str, channel: object) -> bool:
        camps, runs = self.camps, self.runs
        return any(runs.step[s] != DATE_STEP and camps[runs.camp[s]].channel == channel for s in runs.of(contact_id))

    def _unsubscribed(self, contact_id: str, channel: str, ts: int, shard: Shard, out: list) -> None:
        """An unsubscribe was applied: its channel's waiting runs end."""
        row = shard.row_of(contact_id)
        if row is None or shard.consent(row, channel)[0] != "unsubscribed":
            return  # an older event, or outweighed by a newer consent
        memo = self.memos.get(contact_id)
        if memo is None:
            return
        t = max(ts, memo.clock)
        runs = self.runs
        ended = sorted((s for s in runs.of(contact_id)
                        if runs.step[s] != DATE_STEP and self.camps[runs.camp[s]].channel == channel),
                       key=self._order)
        for s in ended:
            out.append(self._decision(s, "skipped_consent", "unsubscribed_while_pending", t))
            runs.end(s)
        memo.clock = t

    # -- the two underlying steps ---------------------------------------------------
    def on_changes(self, changes: Sequence[Change], shard: Shard, now_ms: int | None = None) -> list[Output]:
        """Decide what the segment changes (and the trigger events of their instants) start or end."""
        out: list[Output] = []
        if not changes:
            return out
        self._check(shard)
        touch, inbox = self._touch, self.inbox
        i, n = 0, len(changes)
        while i < n:
            ch = changes[i]
            cid, at = ch.contact_id, ch.at
            j = i + 1
            while j < n and changes[j].contact_id == cid and changes[j].at == at:
                j += 1
            group = changes[i:j]
            i = j
            if not inbox.get(cid) and not any((c.segment_id, c.direction) in touch for c in group):
                continue
            self._instant(cid, at, group, shard, now_ms, out)
        return out

    def advance(self, watermark: int, shard: Shard, now_ms: int | None = None,
                settled: int | None = None) -> list[Output]:
        """Decide every step due strictly before `watermark`, at its own instant, and act on
        the trigger and exit events of instants before `watermark` (or at most `settled`)."""
        out: list[Output] = []
        self._check(shard)
        if self.inbox:
            final = watermark if settled is None or settled < watermark else settled + 1
            ready = [c for c, evs in self.inbox.items() if evs and evs[0][3] < final]
            limit = self.sweep_limit
            if limit is not None and len(ready) > limit:
                # A fan-out (a price drop reaching thousands of watchers) goes in slices, so the
                # flow's other work is not stalled behind it: time stops at the earliest instant
                # still waiting, where those contacts are decided on the next calls.
                rest, ready = ready[limit:], ready[:limit]
                watermark = min(watermark, min(self.inbox[c][0][3] for c in rest))
                self.more = True
            else:
                self.more = False
            for cid in ready:
                self._until(cid, final, shard, now_ms, out, steps_before=watermark)
        runs, inbox, memos = self.runs, self.inbox, self.memos
        due_col, nxt, step_col, heads = runs.due, runs.nxt, runs.step, runs.heads
        while True:
            s = runs.pop_due(watermark)
            if s < 0:
                break
            cid, d = runs.cid[s], due_col[s]
            memo = memos.get(cid)
            t = max(d, self.watermark) if memo is None else max(d, self.watermark, memo.clock)
            if step_col[s] != DATE_STEP and not inbox.get(cid):
                # The common case, without the general walk: this step is the contact's only
                # thing due by `t` (else the contact's instants go in order below).
                x = heads.get(cid, -1)
                while x >= 0 and (x == s or due_col[x] > t):
                    x = nxt[x]
                if x < 0:
                    if memo is None:
                        memo = memos[cid] = Memo(t)
                    row = shard.row_of(cid)
                    self._step(s, cid, t, memo, row, shard, now_ms, out)
                    if due_col[s] <= t and runs.cid[s] == cid:  # its next step is due at once
                        self._decide_due(cid, t, memo, row, shard, now_ms, out)
                    memo.clock = t
                    self._tidy(cid, memo, t)
                    continue
            self._until(cid, d + 1, shard, now_ms, out)
        if watermark > self.watermark:
            self.watermark = watermark
        self._forget(self.watermark)
        return out

    # -- one contact ------------------------------------------------------------------
    def _until(self, cid: str, x: int, shard: Shard, now_ms: int | None, out: list,
               steps_before: int | None = None) -> None:
        """Everything of `cid` strictly before `x`, in time order: the instants of its inbox
        and its due steps (steps only before `steps_before` when given)."""
        runs, inbox = self.runs, self.inbox
        heads = runs.heads
        box = inbox.get(cid)
        if not box and cid not in heads:
            return
        due, nxt = runs.due, runs.nxt
        limit = x if steps_before is None else min(x, steps_before)
        while True:
            ti = box[0][3] if box else _INF
            td = _INF
            s = heads.get(cid, -1)
            while s >= 0:
                d = due[s]
                if d < td:
                    td = d
                s = nxt[s]
            if td >= limit:
                td = _INF
            if ti >= x and td == _INF:
                return
            if ti <= td:
                self._instant(cid, ti, (), shard, now_ms, out)
                box = inbox.get(cid)
            else:
                self._at(cid, td, (), (), shard, now_ms, out)

    def _instant(self, cid: str, at: int, group: Sequence[Change], shard: Shard, now_ms: int | None,
                 out: list) -> None:
        """The contact's instant `at`: what came before it, then its changes and events."""
        self._until(cid, at, shard, now_ms, out)
        box = self.inbox.get(cid)
        evs: list[Event] = []
        if box:
            k = 0
            while k < len(box) and box[k][3] <= at:
                k += 1
            evs = box[:k]
            if k == len(box):
                del self.inbox[cid]
            else:
                del box[:k]
        self._at(cid, at, group, evs, shard, now_ms, out)

    def _at(self, cid: str, at: int, group: Sequence[Change], evs: list[Event], shard: Shard,
            now_ms: int | None, out: list) -> None:
        memo = self.memos.get(cid)
        # Never decide in the engine's past: a late correction (live) is decided now.
        t = max(at, self.watermark) if memo is None else max(at, self.watermark, memo.clock)
        if memo is None:
            memo = self.memos[cid] = Memo(t)
        row = shard.row_of(cid)
        runs = self.runs
        for c in group:
            key = (c.segment_id, c.direction)
            cancels = self._seg_cancels.get(key)
            if cancels and cid in runs.heads:
                reason = "left_segment" if c.direction == "exit" else "re_entered_segment"
                for s in sorted((s for s in runs.of(cid) if runs.camp[s] in cancels and runs.step[s] != DATE_STEP),
                                key=self._order):
                    out.append(self._decision(s, "cancelled", reason, t))
                    runs.end(s)
            starts = self._seg_triggers.get(key)
            if starts:
                chid = make_change_id(c.contact_id, c.segment_id, c.direction, c.at, c.seq)
                # The run keeps the change's seq (8 bytes) rather than its id (81), unless
                # it is decided at another instant than the change's (a late correction).
                exact = t == c.at
                for k in starts:
                    self._start(k, cid, t, run_id(cid, self.camps[k].id, chid), chid, memo, row, shard, out,
                                key=c.seq if exact else 0, keep=None if exact else chid)
        for ev in evs:
            etype = ev[2]
            if etype == PROFILE_TYPE and self._dates:
                self._reschedule_dates(cid, t, row, shard)
            if etype == CATALOG_RUN:
                self._start_catalog(cid, t, ev, memo, row, shard, out)
                continue
            for k in self._ev_triggers.get(etype, ()):
                c = self.camps[k]
                if c.event.matches(ev[4]):  # type: ignore[union-attr]
                    self._start_event(k, cid, t, ev, memo, row, shard, out)
        for ev in evs:
            exits = self._exits.get(ev[2])
            if exits and cid in runs.heads:
                self._exit(cid, ev, exits, t, out)
        if evs:
            self._attribute(cid, t, evs, memo, out)
        self._decide_due(cid, t, memo, row, shard, now_ms, out)
        memo.clock = t
        self._tidy(cid, memo, t)

    # -- memory -------------------------------------------------------------------------
    def _tidy(self, cid: str, memo: Memo, t: int) -> None:
        """Forget sends no cap can see from `t` on and once_per marks that no longer block;
        forget the contact when nothing is left, else note when that may be the case."""
        if memo.sends and memo.sends[0][0] <= t - self._window:
            low = t - self._window
            memo.sends = [s for s in memo.sends if s[0] > low]
        if cid in self.runs.heads or cid in self.inbox:
            return  # looked at again when its runs or events are decided
        kept = NEVER
        if memo.released is not None or memo.touches is not None or memo.held is not None:
            kept = self._prune_attribution(memo, t)
        if not memo.sends and not memo.fired and kept == NEVER:
            del self.memos[cid]
            return
        until = memo.sends[-1][0] + self._window if memo.sends else NEVER
        until = max(until, kept)
        for k, (last, _) in list(memo.fired.items()):
            ck = campaign_of_key(k)
            d = self._once_per.get(ck)
            if d is None:
                if ck not in self._index:
                    del memo.fired[k]
                    continue
                until = None  # `once` (or every_time kept by an old snapshot): remembered for good
                break
            if last <= t - d:
                del memo.fired[k]
            elif until is not None:
                until = max(until, last + d)
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
                if cid not in self.runs.heads and cid not in self.inbox:
                    self._tidy(cid, memo, watermark - 1)


