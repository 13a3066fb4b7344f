"""A brute-force reference of campaign runs (sequences), written without the engine.

Plain Python, one contact at a time, one instant after the other: no heaps, no columns,
no shard. It reads only the parsed campaign definitions (`state.campaigns.model`) and the
events, and says which messages and decisions the contract (SPEC "Sequences and event
triggers", engine docstring) implies. Scope: email campaigns without quiet hours, event
triggers (with `where`, `run_key`, `exit_when`/`match`), yearly date triggers, steps,
re-entry, `max_runs`, caps (skip and defer), consent and address. No segments, no
staleness (replay), no templates that can fail.

The rules, per contact (contacts are independent):

- Events are deduplicated by `event_id` (the first delivery counts) and grouped by
  instant. At instant `t` all the contact's events at `t` are applied first: consent per
  channel is the newest, `unsubscribed` winning over `subscribed` at the same ms; profile
  fields take the value of the last event that sets them.
- An `unsubscribed` event for a channel at `t` ends every open run of that channel's
  campaigns (`skipped_consent`, `unsubscribed_while_pending`).
- Trigger events at `t` start runs, in arrival order, each for its campaigns by priority
  (higher first, then id). Not when the run key names an open run (nothing recorded);
  re-entry (`once`: any send of another run; `once_per: D`: another run's send after
  `t - D`) -> `skipped_duplicate`; an unsubscribe at exactly `t` -> `skipped_consent`.
  Beyond `max_runs` open runs the oldest (start, run id) is `cancelled` (`superseded`).
- Exit events at `t` end the open runs of their campaigns (`exited`, `exit_when:TYPE`),
  when every `match` pair shares a value, never the run the same event started.
- Date triggers: the first instant of a window `[local day at `at`, next local midnight)`
  of a local year not yet fired, in the zone the profile has at that instant (02-29 on
  02-28 in other years).
- Then the steps due at `t`, one at a time, highest (priority, campaign id, start, run id)
  first: re-entry, consent, address, caps (rolling `t - per < s <= t`; `defer` to when the
  cap frees if within `max_defer` of the step's first due instant, else `capped`), sent.
  The next step is due at `max(start + after, t)`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import xxhash

from state.campaigns.model import Campaign, Campaigns
from state.events import Event

__all__ = ["Oracle", "MessageRow", "DecisionRow", "run_hex", "run_id"]

#: (contact, campaign, step, run id hex, due_at)
MessageRow = tuple
#: (contact, campaign, step, run id hex, outcome, reason, at, due_at or None)
DecisionRow = tuple

_ADDRESS = {"email": "email", "sms": "phone", "push": "push_token"}


def run_id(cid: str, camp_id: str, origin: str) -> int:
    """A run's id as the contract names it: the trigger event (or `date:YEAR`), signed 64 bits."""
    h = xxhash.xxh3_64_intdigest(f"{cid}\x1f{camp_id}\x1f{origin}".encode())
    return h - (1 << 64) if h >= 1 << 63 else h


def run_hex(rid: int) -> str:
    return f"{rid & ((1 << 64) - 1):016x}"


def values(props: object, path: tuple[str, ...]) -> list:
    """Values at a dotted path; lists on the way are flattened."""
    cur = [props]
    for key in path:
        nxt = []
        for v in cur:
            if isinstance(v, list):
                nxt += [x[key] for x in v if isinstance(x, dict) and key in x]
            elif isinstance(v, dict) and key in v:
                nxt.append(v[key])
        cur = nxt
    return cur


def _scalars(props: dict, path: tuple[str, ...]) -> set:
    return {v for v in values(props, path) if isinstance(v, (str, int, float, bool))}


# -- dates ----------------------------------------------------------------------------------

def _month_day(value: object) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    parts = value.split("-")
    if len(parts) == 3 and len(parts[0]) == 4 and parts[0].isdigit():
        parts = parts[1:]
    if len(parts) != 2 or not all(len(p) == 2 and p.isascii() and p.isdigit() for p in parts):
        return None
    m, d = int(parts[0]), int(parts[1])
    if not 1 <= m <= 12 or not 1 <= d <= (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m - 1]:
        return None
    return m, d


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def date_window(md: tuple[int, int], at_min: int, tz: ZoneInfo, year: int) -> tuple[int, int]:
    m, d = md
    if (m, d) == (2, 29) and not _leap(year):
        d = 28
    start = datetime(year, m, d, at_min // 60, at_min % 60, tzinfo=tz)
    nxt = date(year, m, d) + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return round(start.timestamp() * 1000), round(end.timestamp() * 1000)


def _zone(name: object, default: str) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except Exception:
            pass
    return ZoneInfo(default)


# -- one contact ----------------------------------------------------------------------------

@dataclass
class _Run:
    camp: Campaign
    rid: int
    start: int
    props: dict
    key: object
    step: int = 0
    due: int = 0
    first: int = 0

    def order(self) -> tuple:
        return (-self.camp.priority, self.camp.id, self.start, self.rid)


@dataclass
class _Contact:
    cid: str
    camps: Campaigns
    consent: dict = field(default_factory=dict)  # channel -> (ts, 1 subscribed | 2 unsubscribed)
    profile: dict = field(default_factory=dict)
    sends: list = field(default_factory=list)  # (t, channel, campaign id, rid)
    runs: list = field(default_factory=list)
    done: dict = field(default_factory=dict)  # date campaign id -> last local year fired
    messages: list = field(default_factory=list)
    decisions: list = field(default_factory=list)

    # records
    def _decide(self, r_camp: Campaign, step: int, rid: int, outcome: str, reason: str, at: int,
                due_at: int | None = None) -> None:
        self.decisions.append((self.cid, r_camp.id, r_camp.steps[step].id, run_hex(rid), outcome, reason, at, due_at))

    def _end(self, r: _Run, outcome: str, reason: str, at: int) -> None:
        self._decide(r.camp, r.step, r.rid, outcome, reason, at)
        self.runs.remove(r)

    # state
    def status(self, channel: str) -> str | None:
        c = self.consent.get(channel)
        return None if c is None else ("subscribed", "unsubscribed")[c[1] - 1]

    def zone(self) -> ZoneInfo:
        return _zone(self.profile.get("timezone"), self.camps.default_timezone)

    def refusal(self, c: Campaign, rid: int, t: int) -> str | None:
        if c.reentry == "every_time":
            return None
        others = [s for s, _, k, r in self.sends if k == c.id and r != rid]
        if c.reentry == "once":
            return "reentry:once" if others else None
        return "reentry:once_per" if any(s > t - c.reentry_ms for s in others) else None

    # runs starting
    def start(self, c: Campaign, t: int, rid: int, props: dict, key: object) -> None:
        refusal = self.refusal(c, rid, t)
        if refusal is not None:
            self._decide(c, 0, rid, "skipped_duplicate", refusal, t)
            return
        cons = self.consent.get(c.channel)
        if cons is not None and cons == (t, 2):
            self._decide(c, 0, rid, "skipped_consent", "unsubscribed", t)
            return
        mine = sorted((r for r in self.runs if r.camp.id == c.id), key=lambda r: (r.start, r.rid))
        for r in mine[:max(0, len(mine) - c.max_runs + 1)]:
            self._end(r, "cancelled", "superseded", t)
        due = t + c.steps[0].after_ms
        self.runs.append(_Run(c, rid, t, props, key, 0, due, due))

    def trigger(self, c: Campaign, ev: Event, t: int) -> None:
        key = None
        if c.run_key is not None:
            key = next(iter(v for v in values(ev.properties, c.run_key) if isinstance(v, (str, int, float, bool))),
                       None)
            if key is not None and any(r.camp.id == c.id and r.key == key for r in self.runs):
                return
        self.start(c, t, run_id(self.cid, c.id, ev.event_id), ev.properties, key)

    def exit(self, ev: Event, t: int) -> None:
        for c in self.camps.campaigns:
            own = run_id(self.cid, c.id, ev.event_id)
            for rule in c.exits:
                if rule.type != ev.type or not rule.matches(ev.properties):
                    continue
                for r in [r for r in self.runs if r.camp.id == c.id and r.rid != own]:
                    if all(_scalars(ev.properties, xp) & _scalars(r.props, tp) for xp, tp in rule.match):
                        self._end(r, "exited", f"exit_when:{ev.type}", t)

    # dates
    def _date_year(self, c: Campaign, t: int) -> int | None:
        """The local year whose window holds `t`, if not fired yet."""
        md = _month_day(self.profile.get(c.date.field))
        if md is None:
            return None
        tz = self.zone()
        y0 = datetime.fromtimestamp(t / 1000, tz).year
        for y in (y0 - 1, y0, y0 + 1):
            lo, hi = date_window(md, c.date.at_min, tz, y)
            if lo <= t < hi and y > self.done.get(c.id, -1):
                return y
        return None

    def next_date(self, t: int) -> int | None:
        """The next window start after `t` with the profile as it is now."""
        best = None
        tz = self.zone()
        for c in self.camps.campaigns:
            md = None if c.date is None else _month_day(self.profile.get(c.date.field))
            if md is None:
                continue
            y0 = datetime.fromtimestamp(t / 1000, tz).year
            for y in range(max(y0 - 1, self.done.get(c.id, -1) + 1), y0 + 3):
                lo, hi = date_window(md, c.date.at_min, tz, y)
                if lo > t and lo < hi:
                    best = lo if best is None else min(best, lo)
                    break
        return best

    # steps
    def advance(self, r: _Run, t: int) -> None:
        i = r.step + 1
        if i < len(r.camp.steps):
            r.step = i
            r.due = r.first = max(r.start + r.camp.steps[i].after_ms, t)
        else:
            self.runs.remove(r)

    def step(self, r: _Run, t: int) -> None:
        c = r.camp
        refusal = self.refusal(c, r.rid, t)
        if refusal is not None:
            self._decide(c, r.step, r.rid, "skipped_duplicate", refusal, t)
            return self.advance(r, t)
        status = self.status(c.channel)
        if status != "subscribed":
            self._decide(c, r.step, r.rid, "skipped_consent", "unsubscribed" if status else "no_consent", t)
            return self.advance(r, t)
        address = self.profile.get(_ADDRESS[c.channel])
        if not isinstance(address, str) or not address:
            self._decide(c, r.step, r.rid, "failed", "no_address", t)
            return self.advance(r, t)
        hits = []
        for cap in self.camps.caps:
            if cap.channel not in (None, c.channel):
                continue
            times = sorted((s for s, ch, _, _ in self.sends
                            if t - cap.per_ms < s <= t and cap.channel in (None, ch)), reverse=True)
            if len(times) >= cap.max:
                hits.append((cap.name, times[cap.max - 1] + cap.per_ms))
        if hits:
            reason = "cap:" + ",".join(n for n, _ in hits)
            release = max(x for _, x in hits)
            if c.cap_policy == "defer" and release - r.first <= c.max_defer_ms:
                self._decide(c, r.step, r.rid, "deferred", reason, t, release)
                r.due = release
                return None
            self._decide(c, r.step, r.rid, "capped", reason, t)
            return self.advance(r, t)
        self.sends.append((t, c.channel, c.id, r.rid))
        self.messages.append((self.cid, c.id, c.steps[r.step].id, run_hex(r.rid), t))
        return self.advance(r, t)

    # one instant
    def instant(self, t: int, evs: list[Event]) -> None:
        self.apply_state(t, evs)
        by_priority = sorted((c for c in self.camps.campaigns if c.event is not None), key=lambda c: (-c.priority, c.id))
        for e in evs:
            for c in by_priority:
                if c.event.type == e.type and c.event.matches(e.properties):
                    self.trigger(c, e, t)
        for e in evs:
            self.exit(e, t)
        for c in sorted((c for c in self.camps.campaigns if c.date is not None), key=lambda c: (-c.priority, c.id)):
            y = self._date_year(c, t)
            if y is not None:
                self.done[c.id] = y
                self.start(c, t, run_id(self.cid, c.id, f"date:{y}"), {}, None)
        self.decide_due(t)

    def apply_state(self, t: int, evs: list[Event]) -> None:
        """The instant's consent and profile events; an unsubscribe ends its channel's runs."""
        unsubscribed = set()
        for e in evs:
            p = e.properties
            if e.type == "consent_changed" and p.get("status") in ("subscribed", "unsubscribed"):
                code = (e.ts, 1 if p["status"] == "subscribed" else 2)
                if code > self.consent.get(p.get("channel"), (-1, 0)):
                    self.consent[p.get("channel")] = code
                if p["status"] == "unsubscribed":
                    unsubscribed.add(p.get("channel"))
            elif e.type == "profile_updated":
                self.profile.update({k: v for k, v in p.items()})
                self.profile = {k: v for k, v in self.profile.items() if v is not None}
        for ch in sorted(unsubscribed, key=str):
            if self.status(ch) == "unsubscribed":
                for r in sorted((r for r in self.runs if r.camp.channel == ch), key=_Run.order):
                    self._end(r, "skipped_consent", "unsubscribed_while_pending", t)

    def decide_due(self, t: int) -> None:
        """The steps due at `t`, by priority."""
        while True:
            due = [r for r in self.runs if r.due <= t]
            if not due:
                return
            assert all(r.due == t for r in due), "a step left behind"
            self.step(min(due, key=_Run.order), t)


class Oracle:
    """Messages and decisions the contract implies for `events` up to `until` inclusive."""

    def __init__(self, camps: Campaigns) -> None:
        for c in camps.campaigns:
            assert c.segment is None and c.sequence and c.quiet is None, f"{c.id}: outside the oracle's scope"
        self.camps = camps

    def run(self, events: list[Event], until: int) -> tuple[list[MessageRow], list[DecisionRow]]:
        seen: set[str] = set()
        per: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            if e.event_id not in seen:
                seen.add(e.event_id)
                per[e.contact_id].append(e)
        messages: list = []
        decisions: list = []
        for cid, evs in per.items():
            c = self._contact(cid, evs, until)
            messages += c.messages
            decisions += c.decisions
        return messages, decisions

    def _contact(self, cid: str, evs: list[Event], until: int) -> _Contact:
        by_ts: dict[int, list[Event]] = defaultdict(list)
        for e in evs:
            by_ts[e.ts].append(e)
        instants = sorted(by_ts)
        c = _Contact(cid, self.camps)
        i, now = 0, None
        while True:
            cands = [r.due for r in c.runs]
            if i < len(instants):
                cands.append(instants[i])
            if now is not None:
                nd = c.next_date(now)
                if nd is not None:
                    cands.append(nd)
            if not cands:
                break
            t = min(cands)
            if t > until:
                break
            assert now is None or t > now
            here = []
            if i < len(instants) and instants[i] == t:
                here = by_ts[t]
                i += 1
            c.instant(t, here)
            now = t
        return c
