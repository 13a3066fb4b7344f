"""Brute-force reference: evaluate definitions from scratch at every instant that matters.

Membership is piecewise constant between event times and window boundaries (an event
time plus a duration used in the definitions), so evaluating at all of those instants
is evaluating "at every instant". Deliberately naive and independent of `state/`'s
compiled columns: only the condition dataclasses are shared.
"""

from __future__ import annotations

from state.conditions import (
    Abandoned, All, AnyOf, Condition, Consent, EventCount, Inactive, Lifetime, Not, Profile,
    Segment, compare, resolve,
)
from state.events import Event

_STATUS_RANK = {"subscribed": 1, "unsubscribed": 2}


def _durations(c: Condition) -> set[int]:
    if isinstance(c, (All, AnyOf)):
        return set().union(*(_durations(x) for x in c.items))
    if isinstance(c, Not):
        return _durations(c.item)
    if isinstance(c, EventCount):
        return {c.within}
    if isinstance(c, Inactive):
        return {c.duration}
    if isinstance(c, Abandoned):
        return {c.after} | ({c.expires} if c.expires else set())
    return set()


def _types(c: Condition) -> set[str]:
    if isinstance(c, (All, AnyOf)):
        return set().union(*(_types(x) for x in c.items))
    if isinstance(c, Not):
        return _types(c.item)
    if isinstance(c, (EventCount, Lifetime, Inactive)):
        return {c.selector.type}
    if isinstance(c, Abandoned):
        return {c.started.type, c.completed.type}
    if isinstance(c, Consent):
        return {"consent_changed"}
    if isinstance(c, Profile):
        return {"profile_updated"}
    raise TypeError(c)


def holds(c: Condition, events: list[Event], t: int, reasons: dict[str, int]) -> bool:
    """`events`: the contact's events with ts <= t, in arrival order."""
    if isinstance(c, All):
        return all(holds(x, events, t, reasons) for x in c.items)
    if isinstance(c, AnyOf):
        return any(holds(x, events, t, reasons) for x in c.items)
    if isinstance(c, Not):
        return not holds(c.item, events, t, reasons)
    if isinstance(c, Consent):
        best = None
        for e in events:
            if e.type == "consent_changed" and e.properties["channel"] == c.channel:
                key = (e.ts, _STATUS_RANK[e.properties["status"]], reasons.get(e.properties.get("reason"), 0))
                if best is None or key > best[0]:
                    best = (key, e.properties)
        if best is None or best[1]["status"] != "subscribed":
            return False
        return c.reasons is None or best[1].get("reason") in c.reasons
    if isinstance(c, EventCount):
        n = sum(1 for e in events if e.type == c.selector.type and c.selector.matches(e.properties)
                and t - c.within < e.ts <= t)
        return {"at_least": n >= c.n, "at_most": n <= c.n, "exactly": n == c.n}[c.op]
    if isinstance(c, Lifetime):
        matching = [e for e in events if e.type == c.selector.type and c.selector.matches(e.properties)]
        if c.aggregate == "count":
            value = float(len(matching))
        else:
            value = 0.0
            for e in matching:
                for v in resolve(e.properties, c.prop):
                    if type(v) in (int, float):
                        value += v
        return compare(value, "=" if c.op == "=" else c.op, c.value)
    if isinstance(c, Inactive):
        times = [e.ts for e in events if e.type == c.selector.type and c.selector.matches(e.properties)]
        if not times:
            return c.include_never
        return max(times) <= t - c.duration
    if isinstance(c, Abandoned):
        starts = [e.ts for e in events if e.type == c.started.type]
        if not starts:
            return False
        s = max(starts)
        if any(e.ts >= s for e in events if e.type == c.completed.type):
            return False
        return t >= s + c.after and (c.expires is None or t < s + c.expires)
    if isinstance(c, Profile):
        value = None
        for e in events:
            if e.type == "profile_updated" and c.field in e.properties:
                value = e.properties[c.field]
        if c.op == "exists":
            return value is not None
        return value is not None and compare(value, c.op, c.value)
    raise TypeError(c)


def expected_changes(segments: list[Segment], events: list[Event], until: int,
                     reasons: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """(contact, segment, direction, at) for in-order input, duplicates (same event_id) dropped.

    A contact exists from its first event of a type that some segment uses.
    """
    used = set().union(*(_types(s.when) for s in segments)) if segments else set()
    seen, unique = set(), []
    for e in events:
        if e.type in used and e.event_id not in seen:
            seen.add(e.event_id)
            unique.append(e)
    durations = set().union(*(_durations(s.when) for s in segments)) if segments else set()
    end = max([until] + [e.ts for e in unique])
    out = []
    for cid in sorted({e.contact_id for e in unique}):
        mine = [e for e in unique if e.contact_id == cid]
        instants = sorted({e.ts for e in mine} | {e.ts + d for e in mine for d in durations})
        member = {s.id: False for s in segments}
        for t in instants:
            if t > end:
                break
            upto = [e for e in mine if e.ts <= t]
            for s in segments:
                now = holds(s.when, upto, t, reasons)
                if now != member[s.id]:
                    out.append((cid, s.id, "enter" if now else "exit", t))
                    member[s.id] = now
    return sorted(out)
