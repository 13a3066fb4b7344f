"""Records of a campaign with a known true effect, made in memory (formats: docs/interfaces.md, SPEC)."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Mapping

from state.timeutil import format_ms

T0 = 1_795_000_000_000  # 2026-11-18T...Z, epoch ms
DAY = 86_400_000


def iso(ms: int) -> str:
    return format_ms(ms)


@lru_cache(maxsize=8)
def _released(campaign_id: str, variants: tuple, sends: int, steps: tuple, channel: str,
              holdout: int) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """The messages and held_out decisions (the same for every seed: only conversions are drawn)."""
    messages, decisions = [], []
    base = {"schema": 1, "campaign_id": campaign_id, "channel": channel, "segment_id": None, "change_id": None,
            "to": {"email": "x@example.com"}, "subject": "s", "body": "b", "data": {}}
    n = 0
    for step in steps:
        for variant in variants:
            for i in range(sends):
                n += 1
                messages.append({**base, "message_id": f"{campaign_id}-{step}-{variant}-{i}",
                                 "contact_id": f"c-{variant}-{i}", "variant": variant, "due_at": iso(T0 + n * 1000),
                                 "run_id": f"run-{variant}-{i}", "step_id": step})
        for i in range(holdout):
            n += 1
            decisions.append({"schema": 1, "message_id": f"{campaign_id}-{step}-held-{i}", "campaign_id": campaign_id,
                              "channel": channel, "contact_id": f"h-{i}", "outcome": "held_out", "reason": "holdout",
                              "at": iso(T0 + n * 1000), "segment_id": None, "change_id": None, "variant": None,
                              "run_id": f"run-h-{i}", "step_id": step})
    return tuple(messages), tuple(decisions)


def campaign(seed: int, rates: Mapping[str | None, float], sends: int = 2000, campaign_id: str = "resend",
             holdout: int = 0, holdout_rate: float = 0.0, steps: tuple[str | None, ...] = (None,),
             currency: str = "EUR", channel: str = "email") -> tuple[list[dict], list[dict], list[dict]]:
    """(messages, decisions, conversions): `sends` messages per variant and step, each converting
    with its variant's rate (one order of 40.00); `holdout` contacts held out per step,
    converting at `holdout_rate`. Only the conversions depend on `seed`."""
    rng = random.Random(seed)
    messages, decisions = _released(campaign_id, tuple(rates), sends, tuple(steps), channel, holdout)
    conversions: list[dict] = []
    for m in messages:
        if rng.random() < rates[m["variant"]]:
            conversions.append({"schema": 1, "conversion_id": f"conv-{m['message_id']}",
                                "order_id": f"o-{m['message_id']}", "contact_id": m["contact_id"],
                                "at": iso(T0 + 10 * DAY), "value": 40.0, "currency": currency,
                                "message_id": m["message_id"], "campaign_id": campaign_id, "variant": m["variant"],
                                "step_id": m["step_id"], "touch": "click", "touch_at": m["due_at"],
                                "group": "message"})
            # the same order as the engine's intent-to-treat twin (an order in the window after the send)
            conversions.append({**conversions[-1], "conversion_id": f"sent-{m['message_id']}", "touch": None,
                                "touch_at": None, "group": "sent"})
    for d in decisions:
        if rng.random() < holdout_rate:
            conversions.append({"schema": 1, "conversion_id": f"conv-{d['message_id']}",
                                "order_id": f"o-{d['message_id']}", "contact_id": d["contact_id"],
                                "at": iso(T0 + 10 * DAY), "value": 40.0, "currency": currency, "message_id": None,
                                "campaign_id": campaign_id, "variant": None, "step_id": d["step_id"],
                                "touch": None, "touch_at": None, "group": "holdout"})
    return list(messages), list(decisions), conversions
