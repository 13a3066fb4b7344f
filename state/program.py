"""Compile segment definitions into a compact column layout and generated evaluators.

Why generated code: a contact's state lives in typed columns (`array('q')`, 8 bytes a
value) instead of per-contact objects, and each segment becomes one Python expression
over those columns, so evaluating the three espresso segments costs a few hundred
nanoseconds. Only validated numbers and column indexes are written into the source;
every user-supplied value is passed in as a bound constant, never as code.

What each condition keeps (and nothing more):
- `event ... within W` at least/at most/exactly N: the N (or N+1) latest matching times;
- `lifetime` count or sum: one number; `inactive`: the latest matching time;
- `abandoned_checkout`: the latest start and the latest completion;
- `consent`: one packed integer per channel (time, status, reason);
- `profile`: the latest value of each field used.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .conditions import (
    Abandoned, All, AnyOf, Condition, Consent, EventCount, Inactive, Lifetime, Not, Profile,
    Segment, Selector, compare, resolve,
)
from .nextchange import INF, TimedGen
from .timeutil import NEVER

__all__ = [
    "Program", "compile_program", "CONSENT_TYPE", "PROFILE_TYPE", "BITS", "CLOCK",
    "SCHED", "SEQ", "NO_TIMER", "Keep",
]

CONSENT_TYPE = "consent_changed"
PROFILE_TYPE = "profile_updated"
_STATUS = {"subscribed": 1, "unsubscribed": 2}
_CMP_EXPR = {">": ">", "<": "<", "=": "==", ">=": ">=", "<=": "<="}

# Fixed integer columns every layout starts with.
BITS, CLOCK, SCHED, SEQ = 0, 1, 2, 3
_FIXED = 4


@dataclass
class _Layout:
    ints: int = _FIXED
    floats: int = 0
    objects: int = 0
    rings: dict[Selector, list[int]] = field(default_factory=dict)  # selector -> K columns
    counts: dict[Selector, int] = field(default_factory=dict)
    sums: dict[tuple[Selector, tuple[str, ...]], int] = field(default_factory=dict)
    consent: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # reason -> code 1..63
    profile: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)  # event type -> object column of latest items

    def ring(self, sel: Selector, k: int) -> list[int]:
        cols = self.rings.setdefault(sel, [])
        while len(cols) < k:
            cols.append(self.ints)
            self.ints += 1
        return cols


class _Gen:
    """Turns one condition tree into a Python expression over `I`, `F`, `O` and constants."""

    def __init__(self, layout: _Layout, consts: dict[str, Any]) -> None:
        self.L, self.consts = layout, consts
        self.time_dependent = False
        self.types: set[str] = set()

    def const(self, value: Any) -> str:
        name = f"K{len(self.consts)}"
        self.consts[name] = value
        return name

    def expr(self, c: Condition) -> str:
        if isinstance(c, All):
            return "(" + " and ".join(self.expr(x) for x in c.items) + ")"
        if isinstance(c, AnyOf):
            return "(" + " or ".join(self.expr(x) for x in c.items) + ")"
        if isinstance(c, Not):
            return f"(not {self.expr(c.item)})"
        return getattr(self, "_" + type(c).__name__)(c)

    def _Consent(self, c: Consent) -> str:
        self.types.add(CONSENT_TYPE)
        col = self.L.consent.setdefault(c.channel, self.L.ints)
        if col == self.L.ints:
            self.L.ints += 1
        status = f"((I[{col}][row] >> 6) & 3) == 1"
        if c.reasons is None:
            return f"({status})"
        codes = frozenset(self.L.reasons.setdefault(r, len(self.L.reasons) + 1) for r in c.reasons)
        if len(self.L.reasons) > 63:
            raise ValueError("at most 63 distinct consent reasons can be used in definitions")
        return f"({status} and (I[{col}][row] & 63) in {self.const(codes)})"

    def _EventCount(self, c: EventCount) -> str:
        self.time_dependent = True
        self.types.add(c.selector.type)
        n, w = c.n, c.within
        need = n + 1 if c.op in ("at_most", "exactly") else n
        cols = self.L.ring(c.selector, max(need, 1))  # the type stays "used" either way
        if need == 0:  # "at least 0" always holds
            return "True"
        inside = lambda i: f"(I[{cols[i]}][row] > t - {w})"  # noqa: E731
        parts = []
        if c.op in ("at_least", "exactly") and n > 0:
            parts.append(inside(n - 1))
        if c.op in ("at_most", "exactly"):
            parts.append(f"(not {inside(n)})")
        return "(" + " and ".join(parts) + ")"

    def _Lifetime(self, c: Lifetime) -> str:
        self.types.add(c.selector.type)
        op = _CMP_EXPR[c.op]
        if c.aggregate == "count":
            col = self.L.counts.setdefault(c.selector, self.L.ints)
            if col == self.L.ints:
                self.L.ints += 1
            return f"(I[{col}][row] {op} {self.const(c.value)})"
        key = (c.selector, c.prop)
        col = self.L.sums.setdefault(key, self.L.floats)
        if col == self.L.floats:
            self.L.floats += 1
        return f"(F[{col}][row] {op} {self.const(c.value)})"

    def _Inactive(self, c: Inactive) -> str:
        self.time_dependent = True
        self.types.add(c.selector.type)
        col = self.L.ring(c.selector, 1)[0]
        done = f"(I[{col}][row] != {NEVER} and I[{col}][row] <= t - {c.duration})"
        if c.include_never:
            return f"(I[{col}][row] == {NEVER} or {done})"
        return done

    def _Abandoned(self, c: Abandoned) -> str:
        self.time_dependent = True
        self.types.update((c.started.type, c.completed.type))
        s = self.L.ring(c.started, 1)[0]
        o = self.L.ring(c.completed, 1)[0]
        out = f"(I[{s}][row] != {NEVER} and I[{o}][row] < I[{s}][row] and t >= I[{s}][row] + {c.after}"
        if c.expires is not None:
            out += f" and t < I[{s}][row] + {c.expires}"
        return out + ")"

    def _Profile(self, c: Profile) -> str:
        self.types.add(PROFILE_TYPE)
        col = self.L.profile.setdefault(c.field, self.L.objects)
        if col == self.L.objects:
            self.L.objects += 1
        if c.op == "exists":
            return f"(O[{col}][row] is not None)"
        return f"cmp(O[{col}][row], {self.const(c.op)}, {self.const(c.value)})"


def _timed_source(segments: list[Segment], L: _Layout, consts: dict[str, Any], time_mask: int) -> list[str]:
    """`settle(row, t, mask)`: new membership bits, and the contact's timer kept right.

    Also `seg(i, row, t) -> (holds, next flip)` for walking to an enter's expiry.
    """
    g = _Gen(L, consts)  # columns are allocated already: leaf expressions only look them up
    tg = TimedGen(L, g.expr)
    bodies = []
    for seg in segments:
        out: list[str] = []
        v, x = tg.gen(seg.when, out, "        ")
        bodies.append((out, v, x))
    src = ["def settle(row, t, mask):",
           "    sched = S[row]",
           f"    if sched <= t: mask |= {time_mask}",
           "    bits = B[row]",
           "    nxt = INF"]
    for i, (out, v, x) in enumerate(bodies):
        src.append(f"    if mask & {1 << i}:")
        src.extend(out)
        src.append(f"        bits = (bits | {1 << i}) if {v} else (bits & ~{1 << i})")
        if x is not None:
            src.append(f"        if {x} < nxt: nxt = {x}")
    src += ["    if sched <= t:",
            "        if nxt != INF:",
            "            S[row] = nxt",
            "            push(heap, (nxt << 32) | row)",
            "        else:",
            "            S[row] = NO_TIMER",
            "    elif nxt < sched:",
            "        S[row] = nxt",
            "        push(heap, (nxt << 32) | row)",
            "    return bits"]
    src.append("def seg(i, row, t):")
    for i, (out, v, x) in enumerate(bodies):
        src.append(f"    if i == {i}:")
        src.extend(out)
        src.append(f"        return {v}, {x if x is not None else 'INF'}")
    src.append("    raise IndexError(i)")
    return src


def _compare_present(actual: Any, op: str, expected: Any) -> bool:
    return actual is not None and compare(actual, op, expected)


@dataclass
class Program:
    """A compiled set of segments: layout sizes plus the source of its evaluators.

    `bind(I, F, O)` returns the functions a shard calls, closed over that shard's columns.
    """

    segments: list[Segment]
    ints: int
    floats: int
    objects: int
    time_mask: int  # segments whose membership can change with time alone
    type_masks: dict[str, int]  # event type -> segments it can affect
    consent_cols: dict[str, int]
    reasons: dict[str, int]
    profile_cols: dict[str, int]
    items_cols: dict[str, int]
    source: str
    consts: dict[str, Any]
    fingerprint: str
    int_defaults: list[int]
    #: What the columns hold, by fact (state/migrate.py): key -> ("I" | "F" | "O", columns);
    #: a ring's columns newest first. Definitions that change keep the facts they share.
    facts: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    def bind(self, I: list, F: list, O: list, heap: list) -> dict[str, Callable]:
        """The evaluators over these columns; the column arrays must stay the same objects."""
        ns: dict[str, Any] = dict(self.consts, I=I, F=F, O=O, cmp=_compare_present, NEVER=NEVER,
                                  resolve=resolve, INF=INF, NO_TIMER=NO_TIMER, S=I[SCHED], B=I[BITS],
                                  heap=heap, push=heapq.heappush)
        for name, cols in (("I", I), ("F", F), ("O", O)):
            ns.update((f"{name}{k}", col) for k, col in enumerate(cols))
        exec(compile(self.source, "<espresso-program>", "exec"), ns)  # noqa: S102 - our own generated code
        return {k: ns[k] for k in ("settle", "seg", "updaters")}


_COLUMN = re.compile(r"\b([IFO])\[(\d+)\]")


def _updater_source(etype: str, L: _Layout, consts: dict[str, Any], fn: str) -> str | None:
    """Source of `fn(row, ts, props)` applying one event of `etype` to the columns."""
    lines: list[str] = []

    def const(v: Any) -> str:
        name = f"K{len(consts)}"
        consts[name] = v
        return name

    for sel, cols in L.rings.items():
        if sel.type != etype:
            continue
        guard = f"if {const(sel)}.matches(props):" if sel.filters else "if True:"
        lines.append(f"    {guard}")
        if len(cols) == 1:
            if not sel.filters and etype in L.items:
                lines.append(f"        if ts >= I[{cols[0]}][row]: O[{L.items[etype]}][row] = props.get('items')")
            lines.append(f"        if ts > I[{cols[0]}][row]: I[{cols[0]}][row] = ts")
        else:  # insert into a descending ring, dropping the oldest
            lines.append(f"        ring = ({', '.join(f'I[{c}]' for c in cols)})")
            lines.append(f"        for i in range({len(cols)}):")
            lines.append("            if ts > ring[i][row]:")
            lines.append(f"                for j in range({len(cols) - 1}, i, -1): ring[j][row] = ring[j - 1][row]")
            lines.append("                ring[i][row] = ts")
            lines.append("                break")
    for sel, col in L.counts.items():
        if sel.type == etype:
            guard = f"{const(sel)}.matches(props)" if sel.filters else "True"
            lines.append(f"    if {guard}: I[{col}][row] += 1")
    for (sel, prop), col in L.sums.items():
        if sel.type == etype:
            guard = f"{const(sel)}.matches(props)" if sel.filters else "True"
            lines.append(f"    if {guard}:")
            lines.append(f"        for v in resolve(props, {prop!r}):")
            lines.append("            if type(v) in (int, float): F[%d][row] += v" % col)
    if etype == CONSENT_TYPE and L.consent:
        cols = const(L.consent)
        rs = const(L.reasons)
        lines.append(f"    col = {cols}.get(props['channel'])")
        lines.append("    if col is not None:")
        # Packed (time, status, reason): the max is the newest; at the same millisecond
        # `unsubscribed` (2) beats `subscribed` (1), so a doubt never receives messages.
        lines.append(f"        code = (ts << 8) | ({const(_STATUS)}[props['status']] << 6) | {rs}.get(props.get('reason'), 0)")
        lines.append("        if code > I[col][row]: I[col][row] = code")
    if etype == PROFILE_TYPE and L.profile:
        lines.append(f"    for name, col in {const(L.profile)}.items():")
        lines.append("        if name in props: O[col][row] = props[name]")
    if not lines:
        return None
    return f"def {fn}(row, ts, props):\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Keep:
    """State kept for later stages (campaigns) beyond what the segments need."""

    consent_channels: tuple[str, ...] = ()
    profile_fields: tuple[str, ...] = ()
    items_of: tuple[str, ...] = ()  # event types whose latest `items` are kept (order, checkout)


def compile_program(segments: list[Segment], keep: Keep = Keep()) -> Program:
    if len(segments) > 60:
        # Membership bits live in one int64 column per contact.
        raise ValueError(f"at most 60 segments per flow, got {len(segments)}")
    L = _Layout()
    consts: dict[str, Any] = {}
    exprs, time_mask, type_masks = [], 0, {}
    for channel in keep.consent_channels:
        if channel not in L.consent:
            L.consent[channel] = L.ints
            L.ints += 1
        type_masks.setdefault(CONSENT_TYPE, 0)
    for name in keep.profile_fields:
        if name not in L.profile:
            L.profile[name] = L.objects
            L.objects += 1
        type_masks.setdefault(PROFILE_TYPE, 0)
    for etype in keep.items_of:
        L.ring(Selector(etype), 1)
        L.items[etype] = L.objects
        L.objects += 1
        type_masks.setdefault(etype, 0)
    for i, seg in enumerate(segments):
        g = _Gen(L, consts)
        exprs.append(g.expr(seg.when))
        if g.time_dependent:
            time_mask |= 1 << i
        for t in g.types:
            type_masks[t] = type_masks.get(t, 0) | (1 << i)
    src = _timed_source(segments, L, consts, time_mask)
    updaters = {}
    for n, etype in enumerate(sorted(type_masks)):
        body = _updater_source(etype, L, consts, f"u{n}")
        if body:
            src.append(body)
            updaters[etype] = f"u{n}"
    src.append("updaters = {" + ", ".join(f"{t!r}: {f}" for t, f in updaters.items()) + "}")
    # Each column is bound to its own name (`I4[row]`, not `I[4][row]`): one subscript
    # less per read in the hottest code of the engine.
    source = _COLUMN.sub(r"\1\2", "\n".join(src) + "\n")
    fingerprint = hashlib.sha256((source + repr(sorted(map(repr, consts.values())))).encode()).hexdigest()[:16]
    return Program(
        segments=list(segments), ints=L.ints, floats=L.floats, objects=L.objects,
        time_mask=time_mask, type_masks={t: m for t, m in type_masks.items() if t in updaters},
        consent_cols=dict(L.consent), reasons=dict(L.reasons), profile_cols=dict(L.profile),
        items_cols=dict(L.items),
        source=source, consts=consts, fingerprint=fingerprint,
        int_defaults=_int_defaults(L), facts=_facts(L),
    )


def ring_key(sel: Selector) -> str:
    return f"ring:{sel!r}"


def _facts(L: _Layout) -> dict[str, tuple[str, tuple[int, ...]]]:
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for sel, cols in L.rings.items():
        out[ring_key(sel)] = ("I", tuple(cols))
    for sel, col in L.counts.items():
        out[f"count:{sel!r}"] = ("I", (col,))
    for (sel, prop), col in L.sums.items():
        out[f"sum:{sel!r}:{prop!r}"] = ("F", (col,))
    for channel, col in L.consent.items():
        out[f"consent:{channel}"] = ("I", (col,))
    for name, col in L.profile.items():
        out[f"profile:{name}"] = ("O", (col,))
    for etype, col in L.items.items():
        out[f"items:{etype}"] = ("O", (col,))
    return out


def condition_facts(c: Condition, out: dict[str, int] | None = None) -> dict[str, int]:
    """The facts a condition reads: key -> how many columns of it (a ring's depth), as
    `compile_program` lays them out."""
    out = {} if out is None else out

    def need(key: str, n: int) -> None:
        out[key] = max(out.get(key, 0), n)

    if isinstance(c, (All, AnyOf)):
        for x in c.items:
            condition_facts(x, out)
    elif isinstance(c, Not):
        condition_facts(c.item, out)
    elif isinstance(c, Consent):
        need(f"consent:{c.channel}", 1)
    elif isinstance(c, EventCount):
        need(ring_key(c.selector), max(c.n + 1 if c.op in ("at_most", "exactly") else c.n, 1))
    elif isinstance(c, Lifetime):
        need(f"count:{c.selector!r}" if c.aggregate == "count" else f"sum:{c.selector!r}:{c.prop!r}", 1)
    elif isinstance(c, Inactive):
        need(ring_key(c.selector), 1)
    elif isinstance(c, Abandoned):
        need(ring_key(c.started), 1)
        need(ring_key(c.completed), 1)
    elif isinstance(c, Profile):
        need(f"profile:{c.field}", 1)
    return out


#: SCHED value of a contact with no pending timer.
NO_TIMER = INF


def _int_defaults(L: _Layout) -> list[int]:
    """Initial value of each integer column for a new contact."""
    defaults = [0] * L.ints
    defaults[CLOCK] = NEVER
    defaults[SCHED] = NO_TIMER
    for cols in L.rings.values():
        for c in cols:
            defaults[c] = NEVER
    return defaults
