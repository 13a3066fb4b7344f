"""Filling facts a kept state lacks from history, so that new definitions can switch over it.

A state keeps only the facts its definitions read (state/migrate.py). A new segment that
reads another fact (a lifetime sum of a new property, the times of a new kind of event, a
deeper count) is refused unless that fact is built first from the contacts' history: the
history's events are applied to a scratch shard of the new definitions, and the columns of
the missing facts are appended to the kept state. The kept facts, memberships and timers are
not touched, so the switch that follows (`Shard(new, state)`) writes for the new segments
exactly the difference at the switch instant, as for any other definition change.

Which history counts: events up to `cutoff`, the latest event time the state's input had
read (later ones still come from the input after the restart). A contact the history knows
and the state does not (its events are older than what the input still held) is added with
the new facts only, when the caller says it belongs here.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from .conditions import All, AnyOf, Condition, EventCount, Not, Segment
from .events import Event
from .program import CLOCK, NO_TIMER, SCHED, Keep, Program, compile_program, condition_facts, ring_key
from .shard import Shard, ShardState, pack_ids, unpack_ids
from .timeutil import NEVER

__all__ = ["FactFiller", "FillReport", "fill_facts", "missing_facts", "lookback_ms", "scratch_program", "UNBOUNDED"]

#: The lookback of a fact only the whole history gives (a lifetime sum, the latest consent).
UNBOUNDED = -1


@dataclass
class FillReport:
    facts: list[str]  # keys of the facts built
    applied: int = 0  # history events applied
    contacts: int = 0  # held contacts the history knows
    added: int = 0  # contacts added from the history alone
    after_cutoff: int = 0  # events later than the cutoff (left to the input)


def missing_facts(state_facts: dict, program: Program) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The facts of `program` the state does not keep, or keeps too shallow (a ring)."""
    out = {}
    for key, (kind, cols) in program.facts.items():
        have = state_facts.get(key)
        if have is None or len(have[1]) < len(cols):
            out[key] = (kind, cols)
    return out


def scratch_program(program: Program, missing: dict) -> Program:
    """A program that builds just the `missing` facts, as deep as `program` keeps them: its
    segments that read them (nothing else is evaluated for history) and the campaign-only ones."""
    wanted = set(missing)
    segments = [s for s in program.segments if wanted & set(condition_facts(s.when))]
    keep = Keep(consent_channels=tuple(k.split(":", 1)[1] for k in wanted if k.startswith("consent:")),
                profile_fields=tuple(k.split(":", 1)[1] for k in wanted if k.startswith("profile:")),
                items_of=tuple(k.split(":", 1)[1] for k in wanted if k.startswith("items:")))
    return compile_program(segments, keep)


def lookback_ms(segments: Iterable[Segment], keys: Iterable[str]) -> int:
    """How far back the history must reach to build `keys` for these segments: the longest
    window of a count that reads them, or UNBOUNDED when any reader needs the whole history
    (a lifetime aggregate, an `inactive` that tells "never" from "long ago", a consent)."""
    wanted, longest = set(keys), 0
    for seg in segments:
        for key, within in _readers(seg.when):
            if key in wanted:
                if within == UNBOUNDED:
                    return UNBOUNDED
                longest = max(longest, within)
    return longest if wanted else 0


def _readers(c: Condition) -> list[tuple[str, int]]:
    if isinstance(c, (All, AnyOf)):
        return [r for x in c.items for r in _readers(x)]
    if isinstance(c, Not):
        return _readers(c.item)
    if isinstance(c, EventCount):
        return [(ring_key(c.selector), c.within)]
    return [(key, UNBOUNDED) for key in condition_facts(c)]


class FactFiller:
    """Builds, from history fed in batches, the facts `program` reads and `state` lacks.

    `state` was made with other definitions; `cutoff` is the latest event time its input had
    read; `adopt(contact_id)`: a contact the state does not hold belongs to this shard."""

    def __init__(self, state: ShardState, program: Program, cutoff: int,
                 adopt: Callable[[str], bool] = lambda cid: False, dedup_horizon: int = 16_384,
                 scratch: Program | None = None) -> None:
        """`scratch`: `scratch_program(program, missing)`, made once for many shards."""
        if state.facts is None:
            raise ValueError("the state was made by a version that did not record its facts: it cannot be backfilled")
        self.state, self.program, self.cutoff, self.adopt = state, program, cutoff, adopt
        self.missing = missing_facts(state.facts, program)
        self.report = FillReport(sorted(self.missing))
        self.cids = unpack_ids(state.cids)
        self.index = {cid: row for row, cid in enumerate(self.cids)}
        if scratch is None:
            scratch = scratch_program(program, self.missing)
        if any(len(scratch.facts.get(k, ("", ()))[1]) != len(cols) for k, (_, cols) in self.missing.items()):
            scratch = program  # a fact laid out otherwise alone: build it with every segment
        self.scratch = Shard(scratch, dedup_horizon)  # the live flow's horizon per shard

    def feed(self, events: Iterable[Event]) -> None:
        """Events in the order they were produced (duplicates are dropped by id)."""
        if not self.missing:
            return
        cutoff, index, adopt, keep = self.cutoff, self.index, self.adopt, []
        for e in events:
            if e.ts > cutoff:
                self.report.after_cutoff += 1
            elif e.contact_id in index or adopt(e.contact_id):
                keep.append(e)
        if keep:
            self.scratch.apply(keep)

    def result(self) -> tuple[ShardState, FillReport]:
        """The state with the missing facts' columns appended (and the contacts only the
        history knows added); kept facts, memberships and timers as they were."""
        state, scratch, report = self.state, self.scratch, self.report
        report.applied = scratch.stats.applied
        if not self.missing:
            return state, report
        cids, index, layout = self.cids, self.index, scratch.program
        ints, floats, objects = list(state.ints), list(state.floats), list(state.objects)
        rows = len(cids)
        added = [cid for cid in scratch.cids if cid not in index]
        if added:  # new rows: the old layout's defaults (no membership, no timer), the new facts below
            ring_cols = {c for key, (kind, cs) in state.facts.items() if key.startswith("ring:") for c in cs}
            for col, values in enumerate(ints):
                d = NEVER if col in ring_cols else NO_TIMER if col == SCHED else 0
                ints[col] = array("q", values) + array("q", [d]) * len(added)
            ints[CLOCK][rows:] = array("q", (scratch.clock(scratch.row_of(cid)) for cid in added))
            floats = [array("d", v) + array("d", [0.0]) * len(added) for v in floats]
            objects = [list(v) + [None] * len(added) for v in objects]
            cids = cids + added
        report.added = len(added)
        report.contacts = len(scratch.cids) - len(added)
        where = [scratch.row_of(cid) for cid in cids]
        facts = dict(state.facts)
        columns = {"I": ints, "F": floats, "O": objects}
        source = {"I": scratch.I, "F": scratch.F, "O": scratch.O}
        # consent codes carry a reason number: the state's numbering, not the scratch program's
        names = {code: name for name, code in layout.reasons.items()}
        recode = {code: (state.reasons or {}).get(name, 0) for code, name in names.items()}
        for key, (kind, _) in self.missing.items():
            placed = []
            for col in layout.facts[key][1]:
                src = source[kind][col]
                if kind == "I":
                    d = layout.int_defaults[col]
                    values: array | list = array("q", (d if r is None else src[r] for r in where))
                    if key.startswith("consent:"):
                        values = array("q", ((v & ~63) | recode.get(v & 63, 0) for v in values))
                elif kind == "F":
                    values = array("d", (0.0 if r is None else src[r] for r in where))
                else:
                    values = [None if r is None else src[r] for r in where]
                placed.append(len(columns[kind]))
                columns[kind].append(values)
            facts[key] = (kind, tuple(placed))
        filled = replace(state, cids=pack_ids(cids), ints=ints, floats=floats, objects=objects, facts=facts)
        return filled, report


def fill_facts(state: ShardState, program: Program, history: Iterable[Event], cutoff: int,
               adopt: Callable[[str], bool] = lambda cid: False) -> tuple[ShardState, FillReport]:
    """`FactFiller` over one iterable of history."""
    filler = FactFiller(state, program, cutoff, adopt)
    batch: list[Event] = []
    for e in history:
        batch.append(e)
        if len(batch) >= 4096:
            filler.feed(batch)
            batch = []
    filler.feed(batch)
    return filler.result()
