"""Deciding a run's step at its instant: the policies in order, then the message."""

from __future__ import annotations

import xxhash

from ..shard import Shard
from .catalog_runs import fired_key
from .compose import pick_variant
from .ids import message_ids, run_hex
from .model import ADDRESS_FIELD
from .policies import Memo, blocked, reentry_refusal
from .quiet import next_allowed, zone
from .records import Decision, Message
from .runs import DATE_STEP

__all__ = ["StepDecisions"]

_xxh64 = xxhash.xxh3_64_intdigest
_new = tuple.__new__  # skips NamedTuple's Python-level __new__: one per decision


class StepDecisions:
    """Part of `CampaignEngine`: the steps due at an instant, by priority, each through
    staleness, re-entry, consent, address, quiet hours, caps and rendering."""

    def _decide_due(self, cid: str, t: int, memo: Memo, row: int | None, shard: Shard, now_ms: int | None,
                    out: list) -> None:
        runs = self.runs
        due_col, nxt, step_col, heads = runs.due, runs.nxt, runs.step, runs.heads
        while True:
            due = []
            dates = False
            s = heads.get(cid, -1)
            while s >= 0:
                if due_col[s] <= t:
                    due.append(s)
                    if step_col[s] == DATE_STEP:
                        dates = True
                s = nxt[s]
            if not due:
                return
            if dates:
                for s in sorted((s for s in due if step_col[s] == DATE_STEP), key=self._order):
                    self._fire_date(s, cid, t, memo, row, shard, out)
                continue
            if len(due) > 1:
                due.sort(key=self._order)
            for s in due:
                if due_col[s] <= t:
                    self._step(s, cid, t, memo, row, shard, now_ms, out)

    def _next(self, s: int, t: int) -> None:
        """The run's step at `s` is decided: schedule its next step, or end it."""
        runs = self.runs
        steps = self.camps[runs.camp[s]].steps
        i = runs.step[s] + 1
        if i < len(steps):
            runs.step[s] = i
            due = runs.start[s] + steps[i].after_ms
            runs.move(s, due if due > t else t)
        else:
            runs.end(s)

    def _step(self, s: int, cid: str, t: int, memo: Memo, row: int | None, shard: Shard, now_ms: int | None,
              out: list) -> None:
        runs = self.runs
        c = self.camps[runs.camp[s]]
        stale = False
        if now_ms is not None and c.max_staleness_ms is not None and now_ms - t > c.max_staleness_ms:
            if not c.allow_stale:
                out.append(self._decision(s, "skipped_stale", "stale", t, detail=f"{now_ms - t} ms behind the wall clock"))
                self._next(s, t)
                return
            stale = True
        fkey = c.id if c.catalog is None else fired_key(c.id, runs.obj[s][1][0]["product_id"])
        refusal = reentry_refusal(c, memo, t, runs.rid[s], fkey)
        if refusal is not None:
            out.append(self._decision(s, "skipped_duplicate", refusal[0], t, detail=refusal[1]))
            self._next(s, t)
            return
        I, O = shard.I, shard.O
        status = 0 if row is None else (I[self._consent_col[c.channel]][row] >> 6) & 3
        if status != 1:
            out.append(self._decision(s, "skipped_consent", "unsubscribed" if status else "no_consent", t))
            self._next(s, t)
            return
        address = O[self._addr_col[c.channel]][row]  # type: ignore[index]
        if not isinstance(address, str) or not address:
            out.append(self._decision(s, "failed", "no_address", t, detail=f"profile has no {ADDRESS_FIELD[c.channel]}"))
            self._next(s, t)
            return
        if c.quiet is not None:
            tz = self._default_tz if self._tz_col is None else (zone(O[self._tz_col][row]) or self._default_tz)
            u = next_allowed(t, tz, c.quiet[0], c.quiet[1])
            if u > t:
                runs.move(s, u)
                out.append(self._decision(s, "deferred", "quiet_hours", t, u))
                return
        if memo.sends:
            hit = blocked(self._caps, memo.sends, c.channel, t)
            if hit:
                names = ",".join(n for n, _ in hit)
                release = max(r for _, r in hit)
                # max_defer counts from the step's own instant (trigger + after)
                if c.cap_policy == "defer" and release - (runs.start[s] + c.steps[runs.step[s]].after_ms) <= c.max_defer_ms:
                    runs.move(s, release)
                    out.append(self._decision(s, "deferred", f"cap:{names}", t, release))
                    return
                out.append(self._decision(s, "capped", f"cap:{names}", t))
                self._next(s, t)
                return
        k = runs.camp[s]
        if c.holdout_bp and _xxh64(f"{cid}\x1fholdout\x1f{c.id}".encode()) % 10_000 < c.holdout_bp:
            # the control group: contacts this step would have reached (consent, address, caps)
            out.append(self._decision(s, "held_out", "holdout", t))
            self._held_out(memo, k, runs.step[s], t)
            self._next(s, t)
            return
        step = c.steps[runs.step[s]]
        variant = pick_variant(c, step, cid)
        obj = runs.obj[s]
        products: list = []
        if c.uses_products:
            items = obj[1] if isinstance(obj, tuple) else None
            products = self.composer.products(c, lambda e: shard.items(row, e), items)  # type: ignore[arg-type]
        try:
            subject, body, html = self.composer.texts(c, variant, cid, row, shard, products, runs.start[s])
        except Exception as exc:  # data the load-time checks cannot see (e.g. products[0] of none)
            out.append(self._decision(s, "failed", "template_error", t, detail=str(exc)[:200]))
            self._next(s, t)
            return
        memo.sends.append((t, c.channel))
        rid = runs.rid[s]
        if c.reentry != "every_time":
            memo.fired[fkey] = (t, rid)
        self.stats["sent"] += 1
        mid, chid, step_id = message_ids(c, step.id, rid, obj, cid, runs.start[s], runs.key[s])
        self._released(memo, k, runs.step[s], step.variants.index(variant), mid, t)
        out.append(_new(Message, (mid, c.id, c.channel, cid, variant.name or None, c.segment, chid, t,
                                  {ADDRESS_FIELD[c.channel]: address}, subject, body or "", html, dict(variant.data),
                                  stale, step_id, run_hex(rid))))
        self._next(s, t)

    def _decision(self, s: int, outcome: str, reason: str, at: int, due_at: int | None = None,
                  detail: str = "") -> Decision:
        runs = self.runs
        return self._decision_raw(runs.camp[s], runs.cid[s], runs.step[s], runs.rid[s], runs.obj[s], outcome,
                                  reason, at, due_at, detail, runs.start[s], runs.key[s])

    def _decision_raw(self, k: int, cid: str, i: int, rid: int, obj: object, outcome: str, reason: str, at: int,
                      due_at: int | None = None, detail: str = "", start: int = 0, mk: int = 0) -> Decision:
        c = self.camps[k]
        step = c.steps[i]
        mid, chid, step_id = message_ids(c, step.id, rid, obj, cid, start, mk)
        variant = None if outcome == "held_out" else pick_variant(c, step, cid).name or None
        self.stats[outcome] = self.stats.get(outcome, 0) + 1
        return _new(Decision, (mid, c.id, c.channel, cid, outcome, reason, at, c.segment, chid, variant, due_at,
                               detail, step_id, run_hex(rid)))

