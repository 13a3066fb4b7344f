"""The retargeting side of `espresso demo`: the built-in campaigns on the demo's clock, and
the lines that show each message as it goes out.

The demo shortens the espresso window from 72 h to `--window` (45 s). The campaigns get
the same treatment: every duration of `state/builtin/campaigns-espresso.yaml` (delays,
caps, re-entry, deferral limits) is multiplied by window / 72 h, so a 2 h delay becomes
1.3 s and the 16 h email cap 10 s at the default window. What cannot shrink is dropped or
widened, and the file says so in its header.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable, NamedTuple

import yaml

from state.campaigns import BUILTIN_CAMPAIGNS_FILE
from state.timeutil import format_duration, parse_duration, parse_ts

__all__ = ["PRODUCTION_WINDOW_MS", "demo_campaigns_yaml", "Trigger", "message_text", "message_latency",
           "describe_message", "format_latency", "percentiles"]

#: The window of the built-in espresso segments; the demo's `--window` stands for it.
PRODUCTION_WINDOW_MS = 72 * 3_600_000
#: Segments the built-in campaign file defines for itself, and the demo segment used instead.
_SEGMENT_FOR = {"checkout-open": "abandoned-checkout"}
#: Staleness guard in the demo: beyond the allowed lateness (time-driven decisions are
#: taken about 2 s after their instant) and a stalled laptop; stale ones still go out, marked.
DEMO_MAX_STALENESS = "30s"
_CHANNEL = {"email": "EMAIL", "sms": "SMS", "push": "PUSH"}
_AFTER = {
    "email_open": "the email open", "email_click": "the email click", "sms_click": "the SMS click",
    "push_open": "the push open", "consent_changed": "the sign-up", "checkout_started": "the checkout",
    "order_placed": "the order", "profile_updated": "the profile update",
}
TEXT_WIDTH = 56


# -- the demo campaigns ----------------------------------------------------------------
def _scaled(ms: int, factor: float) -> int:
    """`ms` on the demo's clock, rounded to a readable value (1.3s, not 1.2500s), at least 1 ms."""
    x = ms * factor
    step = 1000 if x >= 10_000 else 100 if x >= 1_000 else 10 if x >= 100 else 1
    return max(1, int(x / step + 0.5) * step)


def _duration(value: Any, factor: float, where: str) -> str:
    ms = parse_duration(value)
    if ms is None:  # the built-in file is checked by its own tests; this only guards the demo's rewrite
        raise ValueError(f"{BUILTIN_CAMPAIGNS_FILE}: {where}: not a duration: {value!r}")
    return format_duration(_scaled(ms, factor))


class _Dumper(yaml.SafeDumper):
    """Multi-line templates as `|` blocks, as in the built-in file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def demo_campaigns_yaml(window_ms: int) -> str:
    """The built-in campaigns with every duration scaled by `window_ms` / 72 h.

    Also: the abandoned-checkout reminders trigger on the demo's `abandoned-checkout`
    segment (the built-in file's `checkout-open` waits 1 minute, the demo's `--abandoned-after`);
    quiet hours are off (a local clock time such as 21:00 cannot be shortened: an SMS
    deferred to 08:00 would never show); the staleness guard is 30 s and stale messages
    are still sent, marked. Templates, channels, priorities, variants and data are the
    built-in ones, so the messages read as in production.
    """
    text = resources.files("state").joinpath(BUILTIN_CAMPAIGNS_FILE).read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    factor = window_ms / PRODUCTION_WINDOW_MS
    out: dict[str, Any] = {}
    caps = doc.get("caps") or {}
    if caps:
        out["caps"] = {}
        for name, cap in caps.items():
            items = cap if isinstance(cap, list) else [cap]
            scaled = [None if c is None else {**c, "per": _duration(c["per"], factor, f"caps.{name}")} for c in items]
            out["caps"][name] = scaled if isinstance(cap, list) else scaled[0]
    out["default_timezone"] = doc.get("default_timezone", "UTC")
    campaigns = []
    for i, c in enumerate(doc["campaigns"]):
        c = dict(c)
        where = f"campaigns[{i}]"
        trig = {("on" if k is True else k): v for k, v in c["trigger"].items()}  # YAML 1.1 reads `on` as true
        trig["segment"] = _SEGMENT_FOR.get(trig["segment"], trig["segment"])
        c["trigger"] = trig
        for key in ("delay", "max_defer"):
            if c.get(key) is not None:
                c[key] = _duration(c[key], factor, f"{where}.{key}")
        if isinstance(c.get("reentry"), dict):
            c["reentry"] = {"once_per": _duration(c["reentry"]["once_per"], factor, f"{where}.reentry")}
        c["quiet_hours"] = None
        c["max_staleness"] = DEMO_MAX_STALENESS
        c["allow_stale"] = True
        campaigns.append(c)
    out["campaigns"] = campaigns
    window = format_duration(window_ms)
    header = (
        f"# espresso demo campaigns: the built-in ones ({BUILTIN_CAMPAIGNS_FILE}) on the demo's clock,\n"
        f"# every duration x {window}/72h like the segment window (delay 2h -> "
        f"{_duration('2h', factor, 'example')}, email cap 16h -> {_duration('16h', factor, 'example')}).\n"
        "# Checkout reminders trigger on the demo's abandoned-checkout segment; no quiet hours (a\n"
        f"# local time such as 21:00 cannot be shortened); staleness guard {DEMO_MAX_STALENESS}, stale "
        "messages still sent.\n")
    return header + yaml.dump(out, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096,
                              default_flow_style=None)


# -- showing messages --------------------------------------------------------------------
class Trigger(NamedTuple):
    """What the demo knows about the segment change a message answers."""

    at_ms: int  # the change's instant (event time)
    event_type: str | None  # the causing event's type; None: caused by time
    produced_ms: int | None  # wall clock when the demo produced the causing event, if known


def message_text(rec: dict, width: int = TEXT_WIDTH) -> str:
    """What the person sees first: the email subject, the SMS text, the push title and text."""
    subject, body = rec.get("subject"), rec.get("body") or ""
    if rec.get("channel") == "email":
        text = subject or body
    elif rec.get("channel") == "push" and subject:
        text = f"{subject}: {body}"
    else:
        text = body
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width - 3]
    if " " in cut[width // 2:]:  # at a word boundary when there is one in the second half
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,:;-") + "..."


def message_latency(rec: dict, trigger: Trigger | None, read_ms: int) -> tuple[str, int]:
    """`("event", ms)`: from producing the event that triggered it to reading the message, for a
    message sent at its trigger's instant; else `("due", ms)`: from its `due_at` (after a delay,
    a deferral or a time-driven trigger) to reading it."""
    due = _ms(rec.get("due_at"))
    if trigger is not None and trigger.event_type is not None and trigger.produced_ms is not None \
            and due == trigger.at_ms:
        return "event", read_ms - trigger.produced_ms
    return "due", read_ms - (due if due is not None else read_ms)


def format_latency(ms: int) -> str:
    return f"{ms} ms" if abs(ms) < 1000 else f"{ms / 1000:.2f} s"


def describe_message(rec: dict, who: str, trigger: Trigger | None, read_ms: int,
                     style: Callable[[str, str], str] = lambda text, code: text) -> str:
    """One line per message, aligned with the change lines: when it was due, who, the channel,
    what they see first, which campaign (and variant), and how long after the event that
    triggered it the message was read (or after it was due, for a timed one).
    """
    due = _ms(rec.get("due_at"))
    when = _clock(due) if due is not None else "--:--:--.---"
    chan = style(f"{_CHANNEL.get(rec.get('channel', ''), str(rec.get('channel', '?')).upper()):<5}", "1;36")
    campaign = rec.get("campaign_id", "?") + (f", variant {rec['variant']}" if rec.get("variant") else "")
    kind, ms = message_latency(rec, trigger, read_ms)
    if kind == "event" and trigger is not None and trigger.event_type is not None:
        what = _AFTER.get(trigger.event_type, "the " + trigger.event_type.replace("_", " "))
        after = f"{format_latency(ms)} after {what}"
        tail = ""
    else:  # timed: after a delay or a deferral, or its change was caused by time
        after = f"{format_latency(ms)} after due"
        tail = style("  [time]", "2") if trigger is not None else ""  # None: its change was not read in time
    stale = style("  [stale]", "33") if rec.get("stale") else ""
    return f"{when}  {who:<16} {chan}  \"{message_text(rec)}\"  ({campaign})  {after}{stale}{tail}"


def percentiles(values: list[int]) -> tuple[int, int]:
    """p50 and p99 (nearest rank, as the change latency of the demo's summary)."""
    v = sorted(values)
    return v[len(v) // 2], v[min(len(v) - 1, int(len(v) * 0.99))]


def _ms(iso: Any) -> int | None:
    return None if iso is None else parse_ts(iso)


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone().strftime("%H:%M:%S.%f")[:-3]
