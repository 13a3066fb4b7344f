"""Changing segment definitions on kept state: facts carry over, segments are rebuilt from them.

A shard keeps facts, not segments (state/program.py): the latest times of a selector's
events, a lifetime count or sum, a channel's consent, a profile field, the latest items.
When the definitions change, a restored shard keeps every fact the new definitions still
use; a segment whose definition is unchanged keeps its memberships untouched (nothing is
written for it); a new or changed segment is evaluated from the kept facts at the switch
instant, and the differences are written then, with cause `definition_changed`; a removed
segment is dropped. A new or changed segment that reads a fact that was not kept (a new
event type or filter, a deeper window count, a lifetime sum of a new property, a new consent
reason) cannot be evaluated without history: it is refused, with the condition named, until
`espresso backfill` has built that fact from an archive or the input topic (state/backfill.py).
Facts only campaigns need (a consent channel, a profile field) start empty, which only ever
withholds a message until the contact's next such event.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from .conditions import All, AnyOf, Consent, Not, Segment
from .program import BITS, Program, condition_facts

__all__ = ["Plan", "plan_change", "migrate_columns", "DefinitionChangeRefused"]


class DefinitionChangeRefused(ValueError):
    """New or changed segments need history the state does not hold (the message says which)."""


@dataclass
class Plan:
    kept: list[str] = field(default_factory=list)  # unchanged: memberships carried over
    rebuilt: list[str] = field(default_factory=list)  # new or changed: evaluated at the switch
    dropped: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (segment id, why)
    started: list[str] = field(default_factory=list)  # facts kept from now on only

    @property
    def changed(self) -> bool:
        return bool(self.rebuilt or self.dropped or self.started)

    def refusal(self) -> str:
        what = "; ".join(f"segment {sid!r}: {why}" for sid, why in self.refused)
        return (f"{what}. espresso keeps per contact only the facts the previous definitions read, so these "
                "segments would start without their history; stop espresso and build it with `espresso backfill` (from "
                "an archive or the input topic), keep their earlier definition, or start from an empty recovery "
                "directory to rebuild every segment from the input topic")


def _describe(key: str) -> str:
    kind, _, rest = key.partition(":")
    return {"ring": "the times of events", "count": "a lifetime count of events", "sum": "a lifetime sum of",
            "consent": "the latest consent for", "profile": "the profile field",
            "items": "the latest items of"}.get(kind, kind) + " " + rest


def plan_change(old_segments: list[Segment], old_facts: dict[str, tuple[str, tuple[int, ...]]],
                old_reasons: dict[str, int], new: Program) -> Plan:
    """What a switch from the old definitions (and the facts their state holds) to `new` does."""
    plan = Plan()
    before = {s.id: s for s in old_segments}
    for seg in new.segments:
        old = before.get(seg.id)
        if old is not None and old.when == seg.when:
            plan.kept.append(seg.id)
            continue
        missing = []
        for key, depth in condition_facts(seg.when).items():
            have = old_facts.get(key)
            if have is None or len(have[1]) < depth:
                missing.append(_describe(key) + ("" if have is None else f" (the {depth} latest; {len(have[1])} kept)"))
        for reason in _reasons(seg):
            if reason not in old_reasons:
                missing.append(f"consent reason {reason!r}")
        if missing:
            plan.refused.append((seg.id, "needs history not kept: " + ", ".join(missing)))
        else:
            plan.rebuilt.append(seg.id)
    now = {s.id for s in new.segments}
    plan.dropped = [sid for sid in before if sid not in now]
    plan.started = [k for k in new.facts if k not in old_facts]
    return plan


def _reasons(seg: Segment) -> set[str]:
    out: set[str] = set()
    stack = [seg.when]
    while stack:
        c = stack.pop()
        if isinstance(c, (All, AnyOf)):
            stack.extend(c.items)
        elif isinstance(c, Not):
            stack.append(c.item)
        elif isinstance(c, Consent) and c.reasons:
            out.update(c.reasons)
    return out


def migrate_columns(rows: int, ints: list, floats: list, objects: list, old_facts: dict, old_reasons: dict,
                    old_segments: list[Segment], new: Program, plan: Plan) -> tuple[list, list, list]:
    """New columns for `new` from the old ones: fixed columns and kept facts copied, facts new
    to the layout at their defaults, membership bits of kept segments moved to their new
    positions (rebuilt segments are evaluated by the shard)."""
    I = [array("q", [d]) * rows for d in new.int_defaults]
    F = [array("d", [0.0]) * rows for _ in range(new.floats)]
    O = [[None] * rows for _ in range(new.objects)]
    for col in range(1, 4):  # CLOCK, SCHED, SEQ
        I[col] = array("q", ints[col])
    new_cols = {"I": I, "F": F, "O": O}
    old_cols = {"I": ints, "F": floats, "O": objects}
    recode = {code: new.reasons.get(name, 0) for name, code in old_reasons.items()}
    renumbered = any(old != now for old, now in recode.items())  # consent codes carry reason numbers
    for key, (kind, cols) in new.facts.items():
        have = old_facts.get(key)
        if have is None:
            continue
        for new_col, old_col in zip(cols, have[1]):  # a ring keeps its newest entries
            src = old_cols[kind][old_col]
            if renumbered and key.startswith("consent:"):
                new_cols[kind][new_col] = array("q", ((v & ~63) | recode.get(v & 63, 0) for v in src))
            elif kind == "O":
                new_cols[kind][new_col] = list(src)
            else:
                new_cols[kind][new_col] = array(src.typecode, src)
    old_index = {s.id: i for i, s in enumerate(old_segments)}
    moves = [(old_index[s.id], i) for i, s in enumerate(new.segments) if s.id in plan.kept]
    old_bits, bits = ints[BITS], I[BITS]
    for row in range(rows):
        b, nb = old_bits[row], 0
        if b:
            for src, dst in moves:
                if b >> src & 1:
                    nb |= 1 << dst
        bits[row] = nb
    return I, F, O
