"""How runs start and end early: segment changes, trigger events, exit events."""

from __future__ import annotations

from ..conditions import resolve
from ..events import Event
from ..shard import Shard
from .ids import run_id, value_hash, value_hashes
from .policies import Memo, reentry_refusal
from .runs import DATE_STEP

__all__ = ["RunStarts"]

_SAME = object()


class RunStarts:
    """Part of `CampaignEngine`: starting runs (re-entry, consent at the trigger, the bound
    on open runs, run keys) and ending them on exit events."""

    def _order(self, s: int) -> tuple[int, int, int]:
        runs = self.runs
        return self._rank[runs.camp[s]], runs.start[s], runs.rid[s]

    def _consent_at_or_after(self, row: int | None, shard: Shard, channel: str, t: int) -> bool:
        """Is the channel's latest consent an unsubscribe at `t` or later (then a run of `t` ends)?"""
        if row is None:
            return False
        code = shard.I[self._consent_col[channel]][row]
        return (code >> 6) & 3 == 2 and code >> 8 >= t

    def _start(self, k: int, cid: str, t: int, rid: int, obj: object, memo: Memo, row: int | None, shard: Shard,
               out: list, key: int = 0, keep: object = _SAME, fired_key: str | None = None) -> None:
        """Start run `rid` of campaign `k` at `t` (`obj`: what its records need; `keep`: what
        the run stores instead, if different; `fired_key`: what re-entry counts under)."""
        c = self.camps[k]
        first = c.steps[0]
        if c.sequence or first.after_ms:  # a step decided at once checks all this itself
            refusal = reentry_refusal(c, memo, t, rid, fired_key)
            if refusal is not None:
                out.append(self._decision_raw(k, cid, 0, rid, obj, "skipped_duplicate", refusal[0], t,
                                              detail=refusal[1]))
                return
            if c.sequence:  # an unsubscribe of this instant ends the run it would start
                if self._consent_at_or_after(row, shard, c.channel, t):
                    out.append(self._decision_raw(k, cid, 0, rid, obj, "skipped_consent", "unsubscribed", t))
                    return
            else:  # a delayed one-message campaign refuses without consent at the trigger, as always
                status = None if row is None else shard.consent(row, c.channel)[0]
                if status != "subscribed":
                    out.append(self._decision_raw(k, cid, 0, rid, obj, "skipped_consent",
                                                  "unsubscribed" if status else "no_consent", t))
                    return
        runs = self.runs
        mine = []
        camp_col, step_col, nxt = runs.camp, runs.step, runs.nxt
        s = runs.heads.get(cid, -1)
        while s >= 0:
            if camp_col[s] == k and step_col[s] != DATE_STEP:
                mine.append(s)
            s = nxt[s]
        if len(mine) >= c.max_runs:
            mine.sort(key=self._order)
            for s in mine[:len(mine) - c.max_runs + 1]:
                out.append(self._decision(s, "cancelled", "superseded", t))
                runs.end(s)
        due = t + first.after_ms
        runs.new(cid, k, 0, t, due, rid, key, obj if keep is _SAME else keep)
        if not c.sequence and first.after_ms:
            out.append(self._decision_raw(k, cid, 0, rid, obj, "deferred", "delay", t, due))

    def _start_event(self, k: int, cid: str, t: int, ev: Event, memo: Memo, row: int | None, shard: Shard,
                     out: list) -> None:
        c = self.camps[k]
        props = ev[4]
        runs = self.runs
        key = 0
        if c.run_key is not None:
            for v in resolve(props, c.run_key):
                h = value_hash(v)
                if h is not None:
                    key = h
                    break
            if key:
                key_col, camp_col, step_col, nxt = runs.key, runs.camp, runs.step, runs.nxt
                s = runs.heads.get(cid, -1)
                while s >= 0:
                    if key_col[s] == key and camp_col[s] == k and step_col[s] != DATE_STEP:
                        return  # the run this key names is open: the event is part of it
                    s = nxt[s]
        matchsets = None
        paths = self._match_paths[k]
        if paths and not (c.run_key is not None and paths == (c.run_key,)):  # else the key is what exits match
            if len(paths) == 1 and c.run_key is None:
                hs = value_hashes(props, paths[0])
                if len(hs) == 1:
                    key = next(iter(hs))
                elif hs:
                    matchsets = {paths[0]: frozenset(hs)}
            else:
                matchsets = {p: frozenset(value_hashes(props, p)) for p in paths}
        items = None
        if c.uses_trigger_items:  # the event's products, kept with the run for its templates
            items = props.get("items")
            if not isinstance(items, list) or not items:
                pid = props.get("product_id")
                items = None if pid is None else (pid, props.get("price"))
        obj = None if matchsets is None and items is None else (matchsets, items)
        self._start(k, cid, t, run_id(cid, c.id, ev[0]), obj, memo, row, shard, out, key)

    def _exit(self, cid: str, ev: Event, exits: list, t: int, out: list) -> None:
        props = ev[4]
        runs = self.runs
        ended: set[int] = set()
        for k, rule in exits:
            if not rule.matches(props):
                continue
            own = run_id(cid, self.camps[k].id, ev[0])  # an event never ends the run it started
            for s in runs.of(cid):
                if runs.camp[s] != k or runs.step[s] == DATE_STEP or runs.rid[s] == own:
                    continue
                if rule.match and not self._matches(s, rule, props):
                    continue
                ended.add(s)
        for s in sorted(ended, key=self._order):
            out.append(self._decision(s, "exited", f"exit_when:{ev[2]}", t, detail=f"event {ev[0]}"))
            runs.end(s)

    def _matches(self, s: int, rule, props: dict) -> bool:  # type: ignore[no-untyped-def]
        obj = self.runs.obj[s]
        sets = obj[0] if isinstance(obj, tuple) else None
        mk = self.runs.key[s]
        for xp, tp in rule.match:
            values = value_hashes(props, xp)
            if sets is not None:
                if values.isdisjoint(sets.get(tp, ())):
                    return False
            elif not mk or mk not in values:
                return False
        return True

