"""Date triggers: each contact's next yearly instant, kept as a slot of the run store."""

from __future__ import annotations

from ..program import CLOCK
from ..shard import Shard
from ..timeutil import NEVER
from .dates import next_fire
from .ids import run_id
from .model import TIMEZONE_FIELD
from .policies import Memo
from .quiet import zone
from .runs import DATE_STEP, PARKED

__all__ = ["DateRuns"]


class DateRuns:
    """Part of `CampaignEngine`: a profile change (re)schedules the contact's date slots; a
    due slot starts the year's run and moves to the next year."""

    def _seed_dates(self, shard: Shard) -> None:
        """Schedule the date campaigns no snapshot knew for every contact the shard holds
        (a birthday set before the campaign existed still fires)."""
        ks, self._unseeded = self._unseeded, []
        program = shard.program
        fields = {self.camps[k].date.field for k in ks}  # type: ignore[union-attr]
        cols = [program.profile_cols[f] for f in fields if f in program.profile_cols]
        if not cols or not len(shard):
            return
        x = self.watermark if self.watermark != NEVER else max(shard.I[CLOCK])
        runs = self.runs
        dates, self._dates = self._dates, ks
        try:
            for row, cid in enumerate(shard.cids):
                if any(shard.O[c][row] is not None for c in cols) and not any(
                        runs.step[s] == DATE_STEP and runs.camp[s] in ks for s in runs.of(cid)):
                    self._reschedule_dates(cid, x, row, shard)
        finally:
            self._dates = dates

    def _profile_zone(self, profile: dict):  # type: ignore[no-untyped-def]
        return zone(profile.get(TIMEZONE_FIELD)) or self._default_tz

    def _reschedule_dates(self, cid: str, t: int, row: int | None, shard: Shard) -> None:
        """The profile changed at `t`: each date campaign's next instant for this contact."""
        profile = shard.profile(row) if row is not None else {}
        tz = self._profile_zone(profile)
        runs = self.runs
        for k in self._dates:
            d = self.camps[k].date
            slot = next((s for s in runs.of(cid) if runs.camp[s] == k and runs.step[s] == DATE_STEP), -1)
            done = runs.key[slot] if slot >= 0 and runs.key[slot] else None
            nf = next_fire(profile.get(d.field), d.at_min, tz, t, done)  # type: ignore[union-attr]
            if nf is None:
                if slot >= 0:
                    runs.move(slot, PARKED)  # keeps the year it last fired, should a valid date come back
            elif slot < 0:
                runs.new(cid, k, DATE_STEP, t, nf[0], 0)
            elif runs.due[slot] != nf[0]:
                runs.move(slot, nf[0])

    def _fire_date(self, slot: int, cid: str, t: int, memo: Memo, row: int | None, shard: Shard,
                   out: list) -> None:
        runs = self.runs
        k = runs.camp[slot]
        c = self.camps[k]
        d = c.date
        profile = shard.profile(row) if row is not None else {}
        tz = self._profile_zone(profile)
        value = profile.get(d.field)  # type: ignore[union-attr]
        done = runs.key[slot] or None
        nf = next_fire(value, d.at_min, tz, t, done)  # type: ignore[union-attr]
        if nf is not None and nf[0] <= t:
            year = nf[1]
            runs.key[slot] = year
            self._start(k, cid, t, run_id(cid, c.id, f"date:{year}"), None, memo, row, shard, out)
            nf = next_fire(value, d.at_min, tz, t + 1, year)  # type: ignore[union-attr]
        runs.move(slot, PARKED if nf is None else nf[0])

