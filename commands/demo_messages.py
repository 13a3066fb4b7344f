"""The retargeting side of `espresso demo`: the built-in campaigns on the demo's clock, and
the lines that show each message as it goes out.

The demo shortens the espresso window from 72 h to `--window` (45 s). The campaigns get
the same treatment: every duration of the built-in campaign files (`state/builtin/
campaigns-espresso.yaml` and `campaigns-shop.yaml`: delays, sequence steps, caps, re-entry,
deferral limits, the durations of the segments they define) is multiplied by window / 72 h,
so a 2 h delay becomes 1.3 s, the checkout series' 3 h reminder 1.9 s and the 16 h email cap
10 s at the default window; so are the windows of the catalog triggers (a price drop reaches
who viewed the product 30 d -> 450 s before; re-entry per product 7 d -> 105 s). What cannot
shrink is dropped or widened, and the file says so in its header.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable, NamedTuple

import yaml

from state.builtin_names import BUILTIN_CAMPAIGN_FILES
from state.campaigns.ids import run_hex, run_id as engine_run_id
from state.timeutil import format_duration, parse_duration, parse_ts

__all__ = ["PRODUCTION_WINDOW_MS", "demo_campaigns_yaml", "scaled_duration", "event_triggers", "catalog_triggers",
           "sequence_steps", "run_id", "Trigger", "message_text", "message_latency", "describe_message",
           "format_latency", "percentiles", "clock"]

#: The window of the built-in espresso segments; the demo's `--window` stands for it.
PRODUCTION_WINDOW_MS = 72 * 3_600_000
#: Staleness guard in the demo: beyond the allowed lateness (time-driven decisions are
#: taken about 2 s after their instant) and a stalled laptop; stale ones still go out, marked.
DEMO_MAX_STALENESS = "30s"
#: Duration keys of segment conditions (docs/segments.md), scaled in the segments a built-in
#: campaign file defines (the win-back's 90 days without an order).
_SEGMENT_DURATIONS = ("within", "duration", "after", "expires_after")
_CHANNEL = {"email": "EMAIL", "sms": "SMS", "push": "PUSH"}
_AFTER = {
    "email_open": "the email open", "email_click": "the email click", "sms_click": "the SMS click",
    "push_open": "the push open", "consent_changed": "the sign-up", "checkout_started": "the checkout",
    "order_placed": "the order", "profile_updated": "the profile update", "product_viewed": "the product view",
    "added_to_cart": "the add to cart",
    # catalog triggers: the product update that started the run
    "price_drop": "the price drop", "back_in_stock": "the restock", "low_stock": "the low-stock update",
}
#: A catalog campaign's deferral limit on a cap, in production time (the longest cap, 24 h).
CATALOG_MAX_DEFER = "24h"
#: Window keys of catalog triggers (docs/campaigns.md, "Catalog triggers"), and their default.
_CATALOG_WINDOWS = ("viewed_within", "carted_within")
_CATALOG_DEFAULT_WINDOW = "30d"
TEXT_WIDTH = 56


# -- the demo campaigns ----------------------------------------------------------------
def _scaled(ms: int, factor: float) -> int:
    """`ms` on the demo's clock, rounded to a readable value (1.3s, not 1.2500s), at least 1 ms
    (0 stays 0: a sequence step at once)."""
    if ms == 0:
        return 0
    x = ms * factor
    step = 1000 if x >= 10_000 else 100 if x >= 1_000 else 10 if x >= 100 else 1
    return max(1, int(x / step + 0.5) * step)


def _duration(value: Any, factor: float, where: str) -> str:
    ms = parse_duration(value)
    if ms is None:  # the built-in files are checked by their own tests; this only guards the demo's rewrite
        raise ValueError(f"{where}: not a duration: {value!r}")
    return format_duration(_scaled(ms, factor))


def scaled_duration(value: str, window_ms: int) -> str:
    """A production duration on the demo's clock (`90d` -> `1350s` at a 45 s window)."""
    return _duration(value, window_ms / PRODUCTION_WINDOW_MS, value)


def _scale_condition(node: Any, factor: float, where: str) -> Any:
    """A segment condition with every duration (`within`, `duration`, `after`, ...) scaled."""
    if isinstance(node, list):
        return [_scale_condition(n, factor, f"{where}[{i}]") for i, n in enumerate(node)]
    if not isinstance(node, dict):
        return node
    return {k: _duration(v, factor, f"{where}.{k}") if k in _SEGMENT_DURATIONS and isinstance(v, str)
            else _scale_condition(v, factor, f"{where}.{k}") for k, v in node.items()}


def _scale_campaign(c: dict, factor: float, where: str) -> dict:
    c = dict(c)
    c["trigger"] = {("on" if k is True else k): v for k, v in c["trigger"].items()}  # YAML 1.1 reads `on` as true
    if c["trigger"].get("catalog"):  # who counts as a watcher: a view or cart within the (scaled) window
        key = "carted_within" if c["trigger"]["catalog"] == "low_stock" else "viewed_within"
        c["trigger"][key] = c["trigger"].get(key, _CATALOG_DEFAULT_WINDOW)
        for k in _CATALOG_WINDOWS:
            if c["trigger"].get(k) is not None:
                c["trigger"][k] = _duration(c["trigger"][k], factor, f"{where}.trigger.{k}")
        if c.get("caps", "skip") == "skip":  # wait for a cap rather than skip (see demo_campaigns_yaml)
            c["caps"], c["max_defer"] = "defer", CATALOG_MAX_DEFER
    for key in ("delay", "max_defer"):
        if c.get(key) is not None:
            c[key] = _duration(c[key], factor, f"{where}.{key}")
    if isinstance(c.get("reentry"), dict):
        c["reentry"] = {"once_per": _duration(c["reentry"]["once_per"], factor, f"{where}.reentry")}
    if c.get("steps"):
        c["steps"] = [{**st, "after": _duration(st["after"], factor, f"{where}.steps[{i}].after")}
                      for i, st in enumerate(c["steps"])]
    c["quiet_hours"] = None
    c["max_staleness"] = DEMO_MAX_STALENESS
    c["allow_stale"] = True
    return c


def _scale_caps(caps: dict, factor: float, where: str) -> dict:
    out = {}
    for name, cap in caps.items():
        items = cap if isinstance(cap, list) else [cap]
        scaled = [None if c is None else {**c, "per": _duration(c["per"], factor, f"{where}.caps.{name}")}
                  for c in items]
        out[name] = scaled if isinstance(cap, list) else scaled[0]
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line templates as `|` blocks, as in the built-in files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def demo_campaigns_yaml(window_ms: int) -> str:
    """The built-in campaigns of every built-in file (as `--campaigns builtin` runs them) with
    every duration scaled by `window_ms` / 72 h, in one file.

    Scaled: `delay`, `max_defer`, `reentry.once_per`, every `steps[].after`, the caps (of the
    first file that has them, as `--campaigns builtin` takes them), the durations of the
    segments the files define and the windows of catalog triggers (`viewed_within`,
    `carted_within`: who viewed a product 30 d before its price drop is who viewed it 450 s
    before at a 45 s window; re-entry, `once_per: 7d` per product, is 105 s); other trigger
    options, `run_key` and `exit_when` are unchanged. Catalog campaigns that skip a message on a
    cap wait for the cap instead (`caps: defer`, `max_defer` 24 h scaled): in the demo's first
    minutes every contact is new and its welcome email has just taken its email cap, so most
    price drops would go nowhere. Left out:
    date-triggered campaigns (the birthday at 09:00 local time: a clock time cannot be
    shortened, and the demo's contacts have no birthday). Quiet hours are off (an SMS
    deferred to 08:00 would never show); the staleness guard is 30 s and stale messages are
    still sent, marked. Templates, channels, priorities, variants and data are the built-in
    ones, so the messages read as in production.
    """
    factor = window_ms / PRODUCTION_WINDOW_MS
    out: dict[str, Any] = {}
    segments: list = []
    campaigns: list = []
    left_out: list[str] = []
    for file in BUILTIN_CAMPAIGN_FILES.values():
        doc = yaml.safe_load(resources.files("state").joinpath(file).read_text(encoding="utf-8")) or {}
        if doc.get("caps") and "caps" not in out:
            out["caps"] = _scale_caps(doc["caps"], factor, file)
        if doc.get("default_timezone") and "default_timezone" not in out:
            out["default_timezone"] = doc["default_timezone"]
        for i, seg in enumerate(doc.get("segments") or []):
            segments.append({**seg, "when": _scale_condition(seg["when"], factor, f"{file}: segments[{i}].when")})
        for i, c in enumerate(doc.get("campaigns") or []):
            if "date" in (c.get("trigger") or {}):
                left_out.append(c["id"])
                continue
            campaigns.append(_scale_campaign(c, factor, f"{file}: campaigns[{i}]"))
    out.setdefault("default_timezone", "UTC")
    if segments:
        out["segments"] = segments
    out["campaigns"] = campaigns
    window = format_duration(window_ms)
    a, b = (f"state/{f}" for f in BUILTIN_CAMPAIGN_FILES.values())
    header = (
        f"# espresso demo campaigns: the built-in ones ({a} and\n"
        f"# {b}) on the demo's clock: every duration x {window}/72h like the\n"
        f"# segment window (delay 2h -> {_duration('2h', factor, 'example')}, checkout reminder 3h -> "
        f"{_duration('3h', factor, 'example')}, email cap 16h -> {_duration('16h', factor, 'example')},\n"
        f"# win-back 90d -> {_duration('90d', factor, 'example')}, price drop viewed_within 30d -> "
        f"{_duration('30d', factor, 'example')});\n"
        "# other trigger options, run_key and exit_when unchanged.\n"
        + (f"# Left out: {', '.join(left_out)} (a date trigger fires at a local clock time such as 09:00,\n"
           "# which cannot be shortened; the demo's contacts have no birthday either).\n" if left_out else "")
        + f"# Catalog campaigns wait for a cap (caps: defer, max_defer {_duration(CATALOG_MAX_DEFER, factor, 'x')}) "
        "instead of skipping: in the first\n# minutes every contact is new and its welcome took its email cap.\n"
        + "# No quiet hours (a local time such as 21:00 cannot be shortened); staleness guard "
        f"{DEMO_MAX_STALENESS}, stale messages still sent.\n")
    return header + yaml.dump(out, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096,
                              default_flow_style=None)


def event_triggers(campaigns_yaml: str) -> dict[str, tuple[str, ...]]:
    """Event type -> ids of the campaigns of a campaign file whose runs that event type starts."""
    out: dict[str, list[str]] = {}
    for c in (yaml.safe_load(campaigns_yaml) or {}).get("campaigns") or []:
        etype = (c.get("trigger") or {}).get("event")
        if etype:
            out.setdefault(etype, []).append(c["id"])
    return {k: tuple(v) for k, v in out.items()}


def catalog_triggers(campaigns_yaml: str) -> dict[str, str]:
    """Campaign id -> catalog trigger kind (price_drop, ...), for the campaigns started by product updates."""
    return {c["id"]: c["trigger"]["catalog"] for c in (yaml.safe_load(campaigns_yaml) or {}).get("campaigns") or []
            if (c.get("trigger") or {}).get("catalog")}


def sequence_steps(campaigns_yaml: str) -> dict[str, tuple[str, ...]]:
    """Campaign id -> its step ids, for the campaigns of a campaign file that have `steps:`."""
    return {c["id"]: tuple(st["id"] for st in c["steps"])
            for c in (yaml.safe_load(campaigns_yaml) or {}).get("campaigns") or [] if c.get("steps")}


def run_id(contact_id: str, campaign_id: str, event_id: str) -> str:
    """The `run_id` of the messages of the run an event starts (the engine's, for the demo to
    find the event that triggered a message of an event-triggered campaign)."""
    return run_hex(engine_run_id(contact_id, campaign_id, event_id))


# -- showing messages --------------------------------------------------------------------
class Trigger(NamedTuple):
    """What the demo knows about what started a message: the segment change it answers, the
    event that started its run (an event-triggered campaign: no change, no `change_id`), or
    the product update (a catalog trigger: `event_type` is its kind, `price_drop`, ...)."""

    at_ms: int  # the change's instant, or the event's or update's (event time)
    event_type: str | None  # the causing event's type (or catalog kind); None: caused by time
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
    what they see first, which campaign (`/step` of a sequence, and variant), and how long
    after the event that triggered it the message was read (or after it was due, for a timed
    one). A timed message of an event-triggered run, which no change line announces, ends
    with its trigger (`[1.9s after the checkout]`); one answering a segment change with
    `[time]`.
    """
    due = _ms(rec.get("due_at"))
    when = clock(due) if due is not None else "--:--:--.---"
    chan = style(f"{_CHANNEL.get(rec.get('channel', ''), str(rec.get('channel', '?')).upper()):<5}", "1;36")
    campaign = (rec.get("campaign_id", "?") + (f"/{rec['step_id']}" if rec.get("step_id") else "")
                + (f", variant {rec['variant']}" if rec.get("variant") else ""))
    kind, ms = message_latency(rec, trigger, read_ms)
    if kind == "event" and trigger is not None and trigger.event_type is not None:
        after = f"{format_latency(ms)} after {_what(trigger.event_type)}"
        tail = ""
    else:  # timed: after a delay, a sequence step or a deferral, or its change was caused by time
        after = f"{format_latency(ms)} after due"
        if trigger is None:  # its change was not read in time, or its event not produced by this demo
            tail = ""
        elif rec.get("change_id") is None and trigger.event_type is not None and due is not None:
            since = "at" if due == trigger.at_ms else f"{_span(due - trigger.at_ms)} after"
            tail = style(f"  [{since} {_what(trigger.event_type)}]", "2")
        else:
            tail = style("  [time]", "2")
    stale = style("  [stale]", "33") if rec.get("stale") else ""
    return f"{when}  {who:<16} {chan}  \"{message_text(rec)}\"  ({campaign})  {after}{stale}{tail}"


def _what(event_type: str) -> str:
    return _AFTER.get(event_type, "the " + event_type.replace("_", " "))


def _span(ms: int) -> str:
    """A step's distance from its trigger, short: 630ms, 1.9s, 15s, 105s."""
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.1f}".removesuffix(".0") + "s"


def percentiles(values: list[int]) -> tuple[int, int]:
    """p50 and p99 (nearest rank, as the change latency of the demo's summary)."""
    v = sorted(values)
    return v[len(v) // 2], v[min(len(v) - 1, int(len(v) * 0.99))]


def _ms(iso: Any) -> int | None:
    return None if iso is None else parse_ts(iso)


def clock(ms: int) -> str:
    """An instant as the demo's lines start: local time to the millisecond."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone().strftime("%H:%M:%S.%f")[:-3]
