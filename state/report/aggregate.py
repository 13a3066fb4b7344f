"""From message, decision and conversion records to the figures of `espresso report`.

`Aggregator` takes the records of the three inputs in any order (`add(kind, raw, origin)`
for a JSON line or Kafka value, `add_record` for a parsed object), then `finish()` matches
conversions to what was sent or held out and returns a `Report`. Nothing in a record can
raise: a record that cannot be counted is skipped, by reason, and reported (`InputStats`).

Units (docs/campaigns.md, "Results: espresso report"):
- treated: a released message (a record of `retargeting-messages`, by `message_id`); it is
  *converted* when at least one conversion names it; `conversions` counts the orders.
- ordered: a send followed by an order in the channel's click window, touched or not (a
  conversion of group `sent`): lift compares this rate, not the last-touch one, with the
  holdout's, so both sides count the same thing;
- holdout: a `held_out` decision (by `message_id`, the message that was not sent); it is
  converted when a holdout conversion of the same contact and campaign (and step, when the
  conversion names one) falls after it and no later `held_out` decision of theirs comes first.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

import orjson

from ..timeutil import parse_ts
from .stats import ABTest, Interval, ab_test, lift, wilson

__all__ = ["Aggregator", "InputStats", "Counts", "Row", "CampaignReport", "Report", "KINDS", "build_report",
           "NO_CURRENCY"]

KINDS = ("messages", "decisions", "conversions")
NO_CURRENCY = "(none)"  # revenue of conversions without a currency


class _Skip(Exception):
    """A record that cannot be counted; the message is the reason shown to the user."""


@dataclass
class InputStats:
    """What one input held: records counted, duplicates dropped, records skipped by reason."""

    source: str = ""
    records: int = 0  # non-blank lines / Kafka records seen
    used: int = 0  # counted in the figures
    ignored: int = 0  # valid, but not about the report (decisions other than held_out)
    duplicates: int = 0  # same id as an earlier record (redelivery)
    skipped: dict[str, list] = field(default_factory=dict)  # reason -> [count, first origin]

    def skip(self, reason: str, origin: str) -> None:
        entry = self.skipped.get(reason)
        if entry is None:
            self.skipped[reason] = [1, origin]
        else:
            entry[0] += 1

    @property
    def skipped_total(self) -> int:
        return sum(v[0] for v in self.skipped.values())

    def record(self) -> dict:
        return {"source": self.source, "records": self.records, "used": self.used, "ignored": self.ignored,
                "duplicates": self.duplicates, "skipped": self.skipped_total,
                "skipped_by_reason": {r: {"count": c, "first": o} for r, (c, o) in sorted(self.skipped.items())}}


@dataclass
class Counts:
    """Additive counts of a group of sends (or of held-out decisions)."""

    sent: int = 0
    converted: int = 0
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)
    #: sends followed by an order in the window, touched or not (conversions of group
    #: "sent"): the intent-to-treat count a holdout is compared with
    ordered: int = 0

    def add(self, other: "Counts") -> None:
        self.sent += other.sent
        self.ordered += other.ordered
        self.converted += other.converted
        self.conversions += other.conversions
        for cur, v in other.revenue.items():
            self.revenue[cur] = self.revenue.get(cur, Decimal(0)) + v

    def add_revenue(self, currency: str, value: Decimal | None) -> None:
        if value is not None:
            self.revenue[currency] = self.revenue.get(currency, Decimal(0)) + value

    def revenue_record(self) -> dict[str, float]:
        return {cur: float(v) for cur, v in sorted(self.revenue.items())}


@dataclass
class Row:
    """One line of the report: a campaign, a step, a variant, or a variant of a step."""

    counts: Counts
    rate: Interval | None
    holdout: Counts | None  # None on variant rows: the holdout belongs to the campaign (or step)
    holdout_rate: Interval | None
    lift: Interval | None  # against the holdout of the campaign (or of the step)

    def record(self) -> dict:
        c = self.counts
        rec: dict[str, Any] = {"sent": c.sent, "converted": c.converted, "conversions": c.conversions,
                               "ordered_after_send": c.ordered,
                               "rate": self.rate.record() if self.rate else None, "revenue": c.revenue_record()}
        if self.holdout is None:
            rec["holdout"] = None
        else:
            h = self.holdout
            rec["holdout"] = {"size": h.sent, "converted": h.converted, "conversions": h.conversions,
                              "rate": self.holdout_rate.record() if self.holdout_rate else None,
                              "revenue": h.revenue_record()}
        rec["lift"] = self.lift.record() if self.lift else None
        return rec


def _row(counts: Counts, holdout: Counts | None, against: Counts | None) -> Row:
    """A row; `holdout`: shown on it; `against`: the holdout its lift is measured against."""
    base = holdout if holdout is not None else against
    # Lift compares like with like: sends followed by an order in the window (touched or
    # not) against held-out contacts who ordered in the same window.
    return Row(counts, wilson(counts.converted, counts.sent),
               holdout, wilson(holdout.converted, holdout.sent) if holdout is not None else None,
               lift(counts.ordered, counts.sent, base.converted, base.sent) if base is not None else None)


@dataclass
class StepReport:
    step_id: str
    row: Row
    variants: list[tuple[str | None, Row]]

    def record(self) -> dict:
        return {"step_id": self.step_id, **self.row.record(),
                "variants": [{"variant": v, **r.record()} for v, r in self.variants]}


@dataclass
class CampaignReport:
    campaign_id: str
    channel: str | None
    row: Row
    variants: list[tuple[str | None, Row]]
    steps: list[StepReport]
    ab: ABTest | None

    def record(self) -> dict:
        return {"campaign_id": self.campaign_id, "channel": self.channel, **self.row.record(),
                "variants": [{"variant": v, **r.record()} for v, r in self.variants],
                "steps": [s.record() for s in self.steps],
                "ab_test": self.ab.record() if self.ab else None}


@dataclass
class Report:
    campaigns: list[CampaignReport]
    inputs: dict[str, InputStats]
    unmatched: dict[str, int]  # conversions naming a message / holdout decision not in the input
    min_sends: int

    def record(self) -> dict:
        from .stats import ALPHA, CONFIDENCE, MIN_EXPECTED

        return {
            "schema": 1,
            "confidence": CONFIDENCE,
            "methods": {"rate_interval": "wilson", "lift_interval": "katz-log",
                        "ab_test": "chi-square test of independence (Yates' correction for two variants)",
                        "alpha": ALPHA, "min_expected": MIN_EXPECTED, "min_sends": self.min_sends},
            "inputs": {k: v.record() for k, v in self.inputs.items()},
            "unmatched_conversions": dict(self.unmatched),
            "campaigns": [c.record() for c in self.campaigns],
        }


# -- validation ------------------------------------------------------------------------------
def _text(rec: dict, name: str, required: bool = True) -> str | None:
    if name not in rec or rec[name] is None:
        if required:
            raise _Skip(f"missing {name}")
        return None
    v = rec[name]
    if type(v) is not str or (required and not v):
        raise _Skip(f"bad {name}")
    return v


def _instant(rec: dict, name: str) -> int:
    if rec.get(name) is None:
        raise _Skip(f"missing {name}")
    ms = parse_ts(rec[name])
    if ms is None:
        raise _Skip(f"bad {name}")
    return ms


def _money(rec: dict) -> Decimal | None:
    v = rec.get("value")
    if v is None:
        return None
    if type(v) not in (int, float):
        raise _Skip("bad value")
    try:
        d = Decimal(repr(v)) if type(v) is float else Decimal(v)
    except InvalidOperation:  # pragma: no cover - repr of a float always parses
        raise _Skip("bad value") from None
    if not d.is_finite():
        raise _Skip("bad value")
    return d


class Aggregator:
    """Counts records as they come; `finish()` gives the report."""

    def __init__(self) -> None:
        self.inputs = {k: InputStats() for k in KINDS}
        self._intern: dict = {}
        # treated: (campaign, step, variant) -> Counts; message id -> that key
        self._groups: dict[tuple, Counts] = {}
        self._message_key: dict[str, tuple] = {}
        self._converted: set[str] = set()
        self._channels: dict[str, Counter] = defaultdict(Counter)
        # holdout: (campaign, step) -> Counts; (campaign, contact) -> sorted [(at, step, id)]
        self._holdout: dict[tuple, Counts] = {}
        self._held: dict[tuple, list] = defaultdict(list)
        self._held_ids: set[str] = set()
        self._held_converted: set[str] = set()
        self._conversions: list[tuple] = []
        self._conversion_ids: set[str] = set()
        self._ordered: set[str] = set()  # messages followed by an order in the window (group "sent")
        # step order: campaign -> run -> [(instant, step)]
        self._runs: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))

    def _i(self, value):
        return self._intern.setdefault(value, value)

    # -- input ---------------------------------------------------------------------------
    def add(self, kind: str, raw: bytes | None, origin: str) -> None:
        """One JSON record (a line without its end, or a Kafka value) of input `kind`."""
        stats = self.inputs[kind]
        stats.records += 1
        if not raw:
            stats.skip("empty record", origin)
            return
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            stats.skip("not JSON", origin)
            return
        self._add(kind, rec, origin, stats)

    def add_record(self, kind: str, rec: Any, origin: str = "") -> None:
        """One parsed record of input `kind` (tests, and callers that decoded it already)."""
        stats = self.inputs[kind]
        stats.records += 1
        self._add(kind, rec, origin, stats)

    def _add(self, kind: str, rec: Any, origin: str, stats: InputStats) -> None:
        if not isinstance(rec, dict):
            stats.skip("not a JSON object", origin)
            return
        try:
            counted = getattr(self, f"_add_{kind}")(rec)
        except _Skip as exc:
            stats.skip(str(exc), origin)
            return
        if counted is None:
            stats.ignored += 1
        elif counted:
            stats.used += 1
        else:
            stats.duplicates += 1

    def _add_messages(self, rec: dict) -> bool:
        mid = _text(rec, "message_id")
        campaign = _text(rec, "campaign_id")
        variant = _text(rec, "variant", required=False)
        step = _text(rec, "step_id", required=False)
        channel = _text(rec, "channel", required=False)
        if mid in self._message_key:
            return False
        key = self._i((self._i(campaign), self._i(step), self._i(variant)))
        self._message_key[mid] = key
        counts = self._groups.get(key)
        if counts is None:
            counts = self._groups[key] = Counts()
        counts.sent += 1
        if channel:
            self._channels[key[0]][channel] += 1
        run = rec.get("run_id")
        if step is not None and type(run) is str:  # the order of steps, from the runs
            due = parse_ts(rec.get("due_at"))
            if due is not None:
                self._runs[key[0]][run].append((due, key[1]))
        return True

    def _add_decisions(self, rec: dict) -> bool | None:
        outcome = _text(rec, "outcome")
        if outcome != "held_out":
            return None
        mid = _text(rec, "message_id")
        campaign = _text(rec, "campaign_id")
        contact = _text(rec, "contact_id")
        step = _text(rec, "step_id", required=False)
        channel = _text(rec, "channel", required=False)
        at = _instant(rec, "at")
        if mid in self._held_ids:
            return False
        self._held_ids.add(mid)
        campaign, step = self._i(campaign), self._i(step)
        hkey = (campaign, step)
        counts = self._holdout.get(hkey)
        if counts is None:
            counts = self._holdout[hkey] = Counts()
        counts.sent += 1
        if channel:
            self._channels[campaign][channel] += 1
        bisect.insort(self._held[(campaign, contact)], (at, step or "", mid))
        run = rec.get("run_id")
        if step is not None and type(run) is str:
            self._runs[campaign][run].append((at, step))
        return True

    def _add_conversions(self, rec: dict) -> bool:
        cid = _text(rec, "conversion_id")
        campaign = _text(rec, "campaign_id")
        contact = _text(rec, "contact_id")
        at = _instant(rec, "at")
        value = _money(rec)
        currency = _text(rec, "currency", required=False)
        if currency == "":
            currency = None
        variant = _text(rec, "variant", required=False)
        step = _text(rec, "step_id", required=False)
        group = _text(rec, "group", required=False)
        holdout = group == "holdout"
        if group not in (None, "holdout", "message", "sent"):
            raise _Skip("bad group")
        mid = None if holdout else _text(rec, "message_id")
        if cid in self._conversion_ids:
            return False
        self._conversion_ids.add(cid)
        if group == "sent":
            self._ordered.add(mid)
            return True
        self._conversions.append((holdout, mid, self._i(campaign), contact, at, value,
                                  self._i(currency or NO_CURRENCY), self._i(variant), self._i(step)))
        return True

    # -- output --------------------------------------------------------------------------
    def finish(self, min_sends: int = 100) -> Report:
        unmatched = {"message": 0, "holdout": 0}
        for holdout, mid, campaign, contact, at, value, currency, variant, step in self._conversions:
            if holdout:
                hit = self._held_decision(campaign, contact, step, at)
                hkey = (campaign, step) if hit is None else (campaign, hit[1] or None)
                counts = self._holdout.get(hkey)
                if counts is None:
                    counts = self._holdout[hkey] = Counts()
                if hit is None:
                    unmatched["holdout"] += 1
                elif hit[2] not in self._held_converted:
                    self._held_converted.add(hit[2])
                    counts.converted += 1
            else:
                key = self._message_key.get(mid)
                if key is None:
                    unmatched["message"] += 1
                    key = (campaign, step, variant)
                counts = self._groups.get(key)
                if counts is None:
                    counts = self._groups[key] = Counts()
                if mid in self._message_key and mid not in self._converted:
                    self._converted.add(mid)
                    counts.converted += 1
            counts.conversions += 1
            counts.add_revenue(currency, value)
        for mid in self._ordered:
            key = self._message_key.get(mid)
            if key is not None:
                self._groups[key].ordered += 1
        self._ordered = set()
        self._conversions = []  # counted: a second finish() must not count them again
        campaigns = sorted({k[0] for k in self._groups} | {k[0] for k in self._holdout})
        return Report([self._campaign(c, min_sends) for c in campaigns], self.inputs, unmatched, min_sends)

    def _held_decision(self, campaign: str, contact: str, step: str | None, at: int) -> tuple | None:
        """The latest held_out decision of the contact for the campaign (and step) at or before `at`."""
        decisions = self._held.get((campaign, contact))
        if not decisions:
            return None
        i = bisect.bisect_right(decisions, (at, "\U0010ffff", ""))
        while i > 0:
            i -= 1
            if step is None or decisions[i][1] == step:
                return decisions[i]
        return None

    def _step_order(self, campaign: str, steps: set) -> list:
        """Steps in the order their runs reach them (mean position within a run), then by name."""
        pos: dict = defaultdict(lambda: [0, 0])
        for seen in self._runs.get(campaign, {}).values():
            seen.sort()
            order = list(dict.fromkeys(s for _, s in seen))
            for i, s in enumerate(order):
                pos[s][0] += i
                pos[s][1] += 1
        return sorted(steps, key=lambda s: (pos[s][0] / pos[s][1] if pos[s][1] else float("inf"), s))

    def _campaign(self, campaign: str, min_sends: int) -> CampaignReport:
        groups = {k: v for k, v in self._groups.items() if k[0] == campaign}
        holdouts = {k[1]: v for k, v in self._holdout.items() if k[0] == campaign}
        total, held = Counts(), Counts()
        by_variant: dict[str | None, Counts] = defaultdict(Counts)
        for (_, _, variant), c in groups.items():
            total.add(c)
            by_variant[variant].add(c)
        for h in holdouts.values():
            held.add(h)
        campaign_holdout = held if held.sent or held.conversions else None
        channels = self._channels.get(campaign)
        channel = channels.most_common(1)[0][0] if channels else None

        variants = sorted(by_variant, key=lambda v: (v is None, v or ""))
        variant_rows = [(v, _row(by_variant[v], None, campaign_holdout)) for v in variants]
        steps: list[StepReport] = []
        step_ids = {k[1] for k in groups if k[1] is not None} | {s for s in holdouts if s is not None}
        for step in self._step_order(campaign, step_ids):
            step_total = Counts()
            step_variants: dict[str | None, Counts] = defaultdict(Counts)
            for (_, s, variant), c in groups.items():
                if s == step:
                    step_total.add(c)
                    step_variants[variant].add(c)
            h = holdouts.get(step)
            rows = [(v, _row(step_variants[v], None, h)) for v in sorted(step_variants, key=lambda v: (v is None, v or ""))]
            steps.append(StepReport(step, _row(step_total, h if h is not None else None, None), rows))
        named = [(v, by_variant[v].converted, by_variant[v].sent) for v in variants if v is not None]
        return CampaignReport(campaign, channel, _row(total, campaign_holdout, None), variant_rows, steps,
                              ab_test(named, min_sends))


def build_report(messages: Iterable[Any] = (), decisions: Iterable[Any] = (), conversions: Iterable[Any] = (),
                 min_sends: int = 100) -> Report:
    """The report of parsed records (dicts); the aggregation function the tests call directly."""
    agg = Aggregator()
    for kind, records in zip(KINDS, (messages, decisions, conversions)):
        for n, rec in enumerate(records, 1):
            agg.add_record(kind, rec, f"record {n}")
    return agg.finish(min_sends)
