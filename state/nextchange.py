"""Generate, per segment, code computing membership *and* the next instant it may change.

Why: a contact needs a timer only when the passage of time can change one of its
memberships. A window boundary that cannot matter (an order ageing out for someone
with no consent, an open ageing out for someone who is not a member and cannot become
one) schedules nothing, so the shard's heap fires almost only real changes.

For each node the generated code sets `v` (holds at `t`) and `x`, a lower bound of the
next instant after `t` at which `v` can flip with no new event (`INF`: never):
- a count `at least n` that holds flips when its n-th latest event leaves the window;
  `at most n` that fails flips when its (n+1)-th latest leaves; counts only fall with time;
- `inactive` flips once, when the latest event is `duration` old;
- `abandoned_checkout` flips at start + after and start + expires_after;
- `all` that holds can flip at the earliest flip of a child; that fails, not before every
  false child has flipped (the latest of their flips), never if a false child is timeless;
- `any` is the dual; `not` flips with its child.
Lower bounds are safe: at the bound the shard re-evaluates and schedules again.
"""

from __future__ import annotations

from .conditions import Abandoned, All, AnyOf, Condition, EventCount, Inactive, Not
from .timeutil import NEVER

__all__ = ["TimedGen", "INF"]

INF = 2**62


class TimedGen:
    """Emits statements; `expr_of(leaf)` gives a timeless leaf's boolean expression."""

    def __init__(self, layout, expr_of) -> None:
        self.L, self.expr_of = layout, expr_of
        self.n = 0

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def timed(self, c: Condition) -> bool:
        if isinstance(c, (All, AnyOf)):
            return any(self.timed(x) for x in c.items)
        if isinstance(c, Not):
            return self.timed(c.item)
        if isinstance(c, EventCount):
            return not (c.op == "at_least" and c.n == 0)  # "at least 0" always holds
        return isinstance(c, (Inactive, Abandoned))

    def gen(self, c: Condition, out: list[str], ind: str) -> tuple[str, str | None]:
        """Append statements to `out`; return the names holding v and x (None: timeless)."""
        if not self.timed(c):
            v = self.var("v")
            out.append(f"{ind}{v} = {self.expr_of(c)}")
            return v, None
        if isinstance(c, Not):
            v, x = self.gen(c.item, out, ind)
            nv = self.var("v")
            out.append(f"{ind}{nv} = not {v}")
            return nv, x
        if isinstance(c, (All, AnyOf)):
            return self._combine(c, out, ind)
        return getattr(self, "_" + type(c).__name__)(c, out, ind)

    def _combine(self, c: All | AnyOf, out: list[str], ind: str) -> tuple[str, str]:
        is_all = isinstance(c, All)
        v, x = self.var("v"), self.var("x")
        # A false timeless child decides `all` for good (a true one decides `any`): check
        # those first and skip the timed children entirely.
        timeless = [k for k in c.items if not self.timed(k)]
        timed = [k for k in c.items if self.timed(k)]
        out.append(f"{ind}{v} = {not is_all}")
        out.append(f"{ind}{x} = INF")
        inner = ind
        for k in timeless:
            kv, _ = self.gen(k, out, inner)
            out.append(f"{inner}if {kv if is_all else 'not ' + kv}:")
            inner += "    "
        names = [self.gen(k, out, inner) for k in timed]
        vs = [kv for kv, _ in names]
        out.append(f"{inner}{v} = {(' and ' if is_all else ' or ').join(vs)}")
        if is_all:
            out.append(f"{inner}if {v}:")
            out.append(f"{inner}    {x} = {self._fold('<', [kx for _, kx in names])}")
            out.append(f"{inner}else:")
            out.append(f"{inner}    {x} = {self._fold('>', [f'(0 if {kv} else {kx})' for kv, kx in names])}")
        else:
            out.append(f"{inner}if {v}:")
            out.append(f"{inner}    {x} = {self._fold('>', [f'({kx} if {kv} else 0)' for kv, kx in names])}")
            out.append(f"{inner}else:")
            out.append(f"{inner}    {x} = {self._fold('<', [kx for _, kx in names])}")
        return v, x

    def _fold(self, op: str, exprs: list[str]) -> str:
        """min (`<`) or max (`>`) of `exprs` as conditional expressions: a builtin call per
        node costs more than the comparison itself."""
        acc = exprs[0]
        for e in exprs[1:]:
            a, b = self.var("m"), self.var("m")
            acc = f"({a} if ({a} := {acc}) {op} ({b} := {e}) else {b})"
        return acc

    def _EventCount(self, c: EventCount, out: list[str], ind: str) -> tuple[str, str | None]:
        cols, w, n = self.L.rings[c.selector], c.within, c.n
        v, x = self.var("v"), self.var("x")
        if c.op == "at_least" or (c.op == "exactly" and n > 0):
            a = self.var("a")
            out.append(f"{ind}{a} = I[{cols[n - 1]}][row]")
            if c.op == "at_least":
                out.append(f"{ind}{v} = {a} > t - {w}")
                out.append(f"{ind}{x} = {a} + {w} if {v} else INF")
                return v, x
            b = self.var("b")
            out.append(f"{ind}{b} = I[{cols[n]}][row]")
            out.append(f"{ind}{v} = {a} > t - {w} and not {b} > t - {w}")
            out.append(f"{ind}{x} = {a} + {w} if {v} else ({b} + {w} if {b} > t - {w} else INF)")
            return v, x
        b = self.var("b")  # at_most n, or exactly 0
        out.append(f"{ind}{b} = I[{cols[n]}][row]")
        out.append(f"{ind}{v} = not {b} > t - {w}")
        out.append(f"{ind}{x} = INF if {v} else {b} + {w}")
        return v, x

    def _Inactive(self, c: Inactive, out: list[str], ind: str) -> tuple[str, str]:
        col, d = self.L.rings[c.selector][0], c.duration
        l, v, x = self.var("l"), self.var("v"), self.var("x")
        out.append(f"{ind}{l} = I[{col}][row]")
        out.append(f"{ind}{v} = {l} != {NEVER} and {l} <= t - {d}")
        out.append(f"{ind}{x} = {l} + {d} if ({l} != {NEVER} and not {v}) else INF")
        if c.include_never:
            out.append(f"{ind}{v} = {v} or {l} == {NEVER}")
        return v, x

    def _Abandoned(self, c: Abandoned, out: list[str], ind: str) -> tuple[str, str]:
        s_col, o_col = self.L.rings[c.started][0], self.L.rings[c.completed][0]
        s, v, x = self.var("s"), self.var("v"), self.var("x")
        out.append(f"{ind}{s} = I[{s_col}][row]")
        out.append(f"{ind}{v} = False")
        out.append(f"{ind}{x} = INF")
        out.append(f"{ind}if {s} != {NEVER} and I[{o_col}][row] < {s}:")
        until = f" and t < {s} + {c.expires}" if c.expires is not None else ""
        out.append(f"{ind}    {v} = t >= {s} + {c.after}{until}")
        out.append(f"{ind}    if {s} + {c.after} > t:")
        out.append(f"{ind}        {x} = {s} + {c.after}")
        if c.expires is not None:
            out.append(f"{ind}    elif {s} + {c.expires} > t:")
            out.append(f"{ind}        {x} = {s} + {c.expires}")
        return v, x
