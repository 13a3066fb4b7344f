"""Load campaign definitions from YAML, with errors that name the file, the path and the fix.

A campaign file has a `campaigns:` list and optionally `caps:`, `default_timezone:` and,
in the same file, `segments:` / `include_builtin:` (docs/campaigns.md). Every template is
compiled and checked here, so a wrong template stops start-up instead of failing a send.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..conditions import Segment
from ..definitions import FilterModel, builtin_segments, load_yaml, parse_segments
from ..builtin_names import BUILTIN_CAMPAIGN_FILES, is_builtin_name
from ..errors import DefinitionError
from ..catalog import CatalogTrigger, parse_drop
from ..timeutil import parse_duration
from .model import (
    ADDRESS_FIELD, DEFAULT_ATTRIBUTION, DEFAULT_CAPS, DEFAULT_MAX_RUNS, DEFAULT_QUIET_HOURS, MAX_RUNS, Campaign, Campaigns,
    Cap, DateTrigger, EventTrigger, ExitRule, Step, Variant,
)
from .quiet import zone
from .templates import CompiledTemplate, compile_template

__all__ = ["load_campaigns", "parse_campaigns", "builtin_campaigns", "BUILTIN_CAMPAIGNS_FILE", "BUILTIN_FILES",
           "is_builtin_name"]

BUILTIN_FILES = BUILTIN_CAMPAIGN_FILES
BUILTIN_CAMPAIGNS_FILE = BUILTIN_FILES["espresso"]
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_TOP = ("campaigns", "caps", "default_timezone", "segments", "include_builtin", "attribution")
_ITEM_TYPES = ("checkout_started", "order_placed")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3}$")
_DOCS = "see docs/campaigns.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _duration(v: Any, *, zero: bool = False) -> int:
    ms = parse_duration(v)
    if ms is None or ms < 0 or (ms == 0 and not zero):
        raise ValueError(f"must be a positive duration such as 30m, 2h, 1d or 1h30m, got {v!r}")
    return ms


class _TriggerM(_Strict):
    """`{segment: ID, on: enter|exit}`, `{event: TYPE, where: [...]}`, `{date: FIELD, at: "HH:MM"}` or
    `{catalog: price_drop|back_in_stock|low_stock, ...}`."""

    segment: str | None = None
    on: Literal["enter", "exit"] | None = None
    event: str | None = None
    where: list[FilterModel] = []
    date: str | None = None
    at: Any = None
    catalog: Literal["price_drop", "back_in_stock", "low_stock"] | None = None
    min_drop: Any = None
    viewed_within: Any = None
    carted_within: Any = None
    below: int | None = None


class _ExitM(_Strict):
    event: str
    where: list[FilterModel] = []
    match: dict[str, str] = {}


class _TemplateM(_Strict):
    subject: str | None = None
    body: str | None = None
    html: str | None = None


class _VariantM(_Strict):
    name: str
    weight: int = 1
    template: _TemplateM | None = None
    data: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"variant name must be letters, digits, '-', '_' or '.' (at most 32), got {v!r}")
        return v

    @field_validator("weight")
    @classmethod
    def _w(cls, v: int) -> int:
        if v < 0:
            raise ValueError("weight must be >= 0")
        return v


def _hhmm(v: Any) -> int | None:
    """Minutes after local midnight of `HH:MM` (quiet hours, date triggers), else None."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 24 * 60:
        return v  # YAML 1.1 reads an unquoted 21:00 as the base-60 number 1260
    if isinstance(v, str) and _HHMM.match(v.strip()):
        h, mm = v.strip().split(":")
        return int(h) * 60 + int(mm)
    return None


class _QuietM(_Strict):
    start: Any
    end: Any

    @field_validator("start", "end")
    @classmethod
    def _t(cls, v: Any) -> int:
        minutes = _hhmm(v)
        if minutes is None:
            raise ValueError(f"must be a local time HH:MM such as \"21:00\", got {v!r}")
        return minutes


class _StepM(_Strict):
    id: str
    after: Any
    template: _TemplateM | None = None
    variants: list[_VariantM] = []
    data: dict[str, Any] = {}

    @field_validator("after")
    @classmethod
    def _a(cls, v: Any) -> int:
        return _duration(v, zero=True)


class _CampaignM(_Strict):
    id: str
    name: str = ""
    description: str = ""
    trigger: _TriggerM
    channel: Literal["email", "sms", "push"]
    priority: int = 0
    template: _TemplateM | None = None
    variants: list[_VariantM] = []
    steps: list[_StepM] | None = None
    exit_when: list[_ExitM] = []
    run_key: str | None = None
    max_runs: int | None = None
    holdout: Any = None

    @field_validator("holdout")
    @classmethod
    def _h(cls, v: Any) -> int:
        if v is None:
            return 0
        text = str(v).strip()
        if isinstance(v, str) and text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = -1.0
            if 0 <= pct < 100 and round(pct * 100) == pct * 100:
                return round(pct * 100)
        raise ValueError(f"must be a percentage such as 10% (0% to 99.99%), got {v!r}")
    fallbacks: dict[str, str | int | float | bool] = {}
    reentry: Any = "once"
    delay: Any = None
    quiet_hours: _QuietM | None | Literal[False] = None
    caps: Literal["defer", "skip"] = "skip"
    max_defer: Any = "24h"
    max_staleness: Any = "1h"
    allow_stale: bool = False
    products_from: list[Literal["checkout_started", "order_placed"]] = list(_ITEM_TYPES)
    data: dict[str, Any] = {}

    @field_validator("delay")
    @classmethod
    def _d(cls, v: Any) -> int:
        return 0 if v is None else _duration(v, zero=True)

    @field_validator("max_defer")
    @classmethod
    def _md(cls, v: Any) -> int:
        return _duration(v)

    @field_validator("max_staleness")
    @classmethod
    def _ms(cls, v: Any) -> int | None:
        return None if v is None else _duration(v)

    @field_validator("reentry")
    @classmethod
    def _r(cls, v: Any) -> tuple[str, int]:
        if v in ("once", "every_time"):
            return v, 0
        if isinstance(v, dict) and set(v) == {"once_per"}:
            return "once_per", _duration(v["once_per"])
        raise ValueError(f"must be once, every_time or {{once_per: DURATION}} such as {{once_per: 7d}}, got {v!r}")


class _CapM(_Strict):
    max: int
    per: Any

    @field_validator("max")
    @classmethod
    def _m(cls, v: int) -> int:
        if v < 1:
            raise ValueError("max must be >= 1 (remove the cap with 'null' instead)")
        return v

    @field_validator("per")
    @classmethod
    def _p(cls, v: Any) -> int:
        return _duration(v)


def _pydantic_problem(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    # Union members appear in the location as their type names (`_QuietM`, `literal[False]`).
    parts = [p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("_") or "[" in p or p == "none"))]
    loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in parts).replace(".[", "[")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return loc, "unknown key; check the spelling against docs/campaigns.md"
    if err["type"] == "missing":
        return loc, "required"
    if err["type"] == "literal_error":
        return loc, f"{msg}, got {err.get('input')!r}"
    return loc, msg


def _validate(model: type[_Strict], body: Any, file: str, path: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        loc, msg = _pydantic_problem(exc)
        raise DefinitionError(file, f"{path}.{loc}" if loc else path, msg, _DOCS) from None


def _normalize(node: dict) -> dict:
    """YAML 1.1 reads the key `on` as `true`: `trigger: {segment: s, on: exit}` must still work."""
    trig = node.get("trigger")
    if isinstance(trig, dict) and True in trig:
        trig = {("on" if k is True else k): v for k, v in trig.items()}
        node = {**node, "trigger": trig}
    return node


def _fallbacks(m: _CampaignM, file: str, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in m.fallbacks.items():
        name = key.removeprefix("contact.")
        if not _FIELD.match(name):
            raise DefinitionError(file, f"{path}.fallbacks.{key}", "a fallback is named after a contact field",
                                  "write e.g. first_name: there")
        out[name] = value
    return out


def _variants(m: Any, channel: str, fallbacks: dict, file: str, path: str,
              base_template: _TemplateM | None = None, base_data: dict | None = None) -> tuple[Variant, ...]:
    """The variants of a campaign or of one step (`m` has template, variants and data; a step
    inherits the campaign's template keys and data it does not give itself)."""
    if base_template is not None:
        own = m.template or _TemplateM()
        m_template = _TemplateM(**{k: getattr(own, k) if getattr(own, k) is not None else getattr(base_template, k)
                                   for k in ("subject", "body", "html")})
        has_template = m.template is not None or any(getattr(base_template, k) is not None
                                                     for k in ("subject", "body", "html"))
    else:
        m_template, has_template = m.template, m.template is not None
    data = {**(base_data or {}), **m.data}
    base = m_template or _TemplateM()
    always = frozenset({"id", ADDRESS_FIELD[channel]})
    specs: list[tuple[str, int, _TemplateM, dict, str]] = []
    if not m.variants:
        if not has_template:
            raise DefinitionError(file, f"{path}.template", "required",
                                  "give template: {body: ...} (and subject: for email)")
        specs.append(("", 1, base, dict(data), f"{path}.template"))
    else:
        seen: set[str] = set()
        for i, v in enumerate(m.variants):
            vp = f"{path}.variants[{i}]"
            if v.name in seen:
                raise DefinitionError(file, f"{vp}.name", f"duplicate variant name {v.name!r}", "name every variant differently")
            seen.add(v.name)
            over = v.template or _TemplateM()
            merged = _TemplateM(**{k: getattr(over, k) if getattr(over, k) is not None else getattr(base, k)
                                   for k in ("subject", "body", "html")})
            where = f"{vp}.template" if v.template is not None else f"{path}.template"
            specs.append((v.name, v.weight, merged, {**data, **(v.data or {})}, where))
        if sum(s[1] for s in specs) <= 0:
            raise DefinitionError(file, f"{path}.variants", "weights add up to 0", "give at least one variant a weight > 0")
    out = []
    for name, weight, t, data, where in specs:
        if t.body is None:
            raise DefinitionError(file, f"{where}.body", "required", "every message needs a body")
        if channel == "email" and t.subject is None:
            raise DefinitionError(file, f"{where}.subject", "required for email", "give the email a subject")
        if channel == "sms" and (t.subject is not None or t.html is not None):
            key = "subject" if t.subject is not None else "html"
            raise DefinitionError(file, f"{where}.{key}", f"an SMS has no {key}", f"remove {key}: (SMS is body only)")
        if channel == "push" and t.html is not None:
            raise DefinitionError(file, f"{where}.html", "a push has no html", "remove html: (push has subject as title, and body)")

        def comp(key: str, html: bool = False, t: Any = t, where: str = where) -> CompiledTemplate | None:
            src = getattr(t, key)
            if src is None:
                return None
            return compile_template(src, html=html, fallbacks=fallbacks, always=always, file=file, path=f"{where}.{key}")

        out.append(Variant(name, weight, comp("subject"), comp("body"), comp("html", html=True), dict(data)))
    return tuple(out)


def _path(v: str, file: str, where: str) -> tuple[str, ...]:
    if not _PATH.match(v):
        raise DefinitionError(file, where, f"not a property path: {v!r}",
                              "name a property of the event, e.g. checkout_id or items.product_id")
    return tuple(v.split("."))


def _trigger(m: _CampaignM, segments: dict[str, Segment], file: str, path: str) -> dict[str, Any]:
    t, tp = m.trigger, f"{path}.trigger"
    given = [k for k in ("segment", "event", "date", "catalog") if getattr(t, k) is not None]
    if len(given) != 1:
        raise DefinitionError(file, tp, "needs exactly one of segment:, event:, date: or catalog:",
                              "e.g. {segment: email-espresso, on: enter}, {event: order_placed}, "
                              "{date: birthday, at: \"09:00\"} or {catalog: price_drop, min_drop: 10%, viewed_within: 30d}")
    kind = given[0]
    catalog_keys = ("min_drop", "viewed_within", "carted_within", "below")
    extra = {"segment": ("where", "at", *catalog_keys), "event": ("on", "at", *catalog_keys),
             "date": ("on", "where", *catalog_keys), "catalog": ("on", "where", "at")}[kind]
    for key in extra:
        if key in t.model_fields_set:
            raise DefinitionError(file, f"{tp}.{key}", f"not an option of a {kind} trigger", _DOCS)
    if kind == "segment":
        if t.segment not in segments:
            known = ", ".join(sorted(segments)) or "none"
            raise DefinitionError(file, f"{tp}.segment", f"unknown segment {t.segment!r}",
                                  f"use one of the segments the flow runs ({known}) or define it under segments:")
        return {"segment": t.segment, "on": t.on or "enter"}
    if kind == "event":
        if not t.event or not _FIELD.match(t.event):
            raise DefinitionError(file, f"{tp}.event", f"not an event type: {t.event!r}", "e.g. event: order_placed")
        return {"segment": None, "on": "", "event": EventTrigger(t.event, tuple(f.build() for f in t.where))}
    if kind == "catalog":
        return {"segment": None, "on": "", "catalog": _catalog_trigger(t, file, tp)}
    if not _FIELD.match(t.date or ""):
        raise DefinitionError(file, f"{tp}.date", f"not a profile field: {t.date!r}", "e.g. date: birthday")
    at = _hhmm(t.at)
    if at is None:
        raise DefinitionError(file, f"{tp}.at", f"must be a local time HH:MM such as \"09:00\", got {t.at!r}",
                              "give the local time of the yearly message, e.g. at: \"09:00\"")
    return {"segment": None, "on": "", "date": DateTrigger(t.date, at)}


_CATALOG_OPTIONS = {"price_drop": ("min_drop", "viewed_within"), "back_in_stock": ("viewed_within",),
                    "low_stock": ("below", "carted_within")}
_CATALOG_EXAMPLE = {"price_drop": "{catalog: price_drop, min_drop: 10%, viewed_within: 30d}",
                    "back_in_stock": "{catalog: back_in_stock, viewed_within: 30d}",
                    "low_stock": "{catalog: low_stock, below: 5, carted_within: 7d}"}
#: The look-back of a catalog trigger that does not give one (Klaviyo's default).
DEFAULT_CATALOG_WINDOW = "30d"
#: The longest look-back: what contacts' watches are kept for.
MAX_CATALOG_WINDOW_MS = 90 * 86_400_000


def _catalog_trigger(t: _TriggerM, file: str, tp: str) -> CatalogTrigger:
    kind = t.catalog
    assert kind is not None
    allowed = _CATALOG_OPTIONS[kind]
    for key in ("min_drop", "viewed_within", "carted_within", "below"):
        if key in t.model_fields_set and key not in allowed:
            raise DefinitionError(file, f"{tp}.{key}", f"not an option of a {kind} trigger",
                                  f"e.g. {_CATALOG_EXAMPLE[kind]}")
    window_key = "carted_within" if kind == "low_stock" else "viewed_within"
    raw_window = getattr(t, window_key)
    window = parse_duration(DEFAULT_CATALOG_WINDOW if raw_window is None else raw_window)
    if window is None or not 0 < window <= MAX_CATALOG_WINDOW_MS:
        raise DefinitionError(file, f"{tp}.{window_key}", f"must be a duration from 1ms to 90d, got {raw_window!r}",
                              f"e.g. {_CATALOG_EXAMPLE[kind]}")
    if kind == "price_drop":
        drop = parse_drop(t.min_drop)
        if drop is None:
            raise DefinitionError(file, f"{tp}.min_drop",
                                  "required: a percentage above 0% and below 100%, or an amount above 0"
                                  if t.min_drop is None else f"not a percentage or an amount: {t.min_drop!r}",
                                  "e.g. min_drop: 10% or min_drop: 5 (in the shop's currency)")
        return CatalogTrigger(kind, window, drop=drop)
    if kind == "low_stock":
        if t.below is None or t.below < 2:
            raise DefinitionError(file, f"{tp}.below", "required: an inventory of 2 or more"
                                  if t.below is None else f"must be 2 or more, got {t.below}",
                                  "e.g. below: 5 (fires when stock falls from 5 or more to 1-4)")
        return CatalogTrigger(kind, window, below=t.below)
    return CatalogTrigger(kind, window)


def _exits(m: _CampaignM, trig: dict, file: str, path: str) -> tuple[ExitRule, ...]:
    out = []
    for i, x in enumerate(m.exit_when):
        xp = f"{path}.exit_when[{i}]"
        if not _FIELD.match(x.event):
            raise DefinitionError(file, f"{xp}.event", f"not an event type: {x.event!r}", "e.g. event: order_placed")
        if x.match and "event" not in trig and "catalog" not in trig:
            raise DefinitionError(file, f"{xp}.match", "only an event trigger or a catalog trigger (its product) has properties to match",
                                  "remove match: (any such event ends the run), or trigger the campaign on an event")
        pairs = tuple((_path(k, file, f"{xp}.match.{k}"), _path(v, file, f"{xp}.match.{k}")) for k, v in x.match.items())
        out.append(ExitRule(x.event, tuple(f.build() for f in x.where), pairs))
    return tuple(out)


def _steps(m: _CampaignM, fallbacks: dict, file: str, path: str) -> tuple[Step, ...]:
    if m.steps is None:
        return (Step("", m.delay, _variants(m, m.channel, fallbacks, file, path)),)
    if "delay" in m.model_fields_set and m.delay:
        raise DefinitionError(file, f"{path}.delay", "a campaign with steps has no delay",
                              "give each step its own after: (counted from the trigger)")
    if not m.steps:
        raise DefinitionError(file, f"{path}.steps", "must be a non-empty list", "add '- {id: ..., after: 0s, ...}' steps")
    if m.variants:
        raise DefinitionError(file, f"{path}.variants", "a campaign with steps has its variants per step",
                              "move variants: under each step that tests them (a contact gets the same arm in every step)")
    base = m.template or _TemplateM()
    out: list[Step] = []
    for i, st in enumerate(m.steps):
        sp = f"{path}.steps[{i}]"
        if not _ID.match(st.id):
            raise DefinitionError(file, f"{sp}.id", f"invalid step id {st.id!r}",
                                  "use lowercase letters, digits, '-', '_' or '.', e.g. id: thanks")
        if any(o.id == st.id for o in out):
            raise DefinitionError(file, f"{sp}.id", f"duplicate step id {st.id!r}", "give every step its own id")
        if out and st.after < out[-1].after_ms:
            raise DefinitionError(file, f"{sp}.after", "steps must be listed in the order of their after:",
                                  "sort the steps by after: (all count from the trigger)")
        variants = _variants(st, m.channel, fallbacks, file, sp, base_template=base, base_data=m.data)
        out.append(Step(st.id, st.after, variants))
    return tuple(out)


def _campaign(node: Any, segments: dict[str, Segment], file: str, path: str) -> Campaign:
    if not isinstance(node, dict):
        raise DefinitionError(file, path, "a campaign is a mapping with id, trigger, channel and template", _DOCS)
    m = _validate(_CampaignM, _normalize(node), file, path)
    if not _ID.match(m.id):
        raise DefinitionError(file, f"{path}.id", f"invalid campaign id {m.id!r}",
                              "use lowercase letters, digits, '-', '_' or '.', e.g. id: email-espresso-resend")
    trig = _trigger(m, segments, file, path)
    if m.run_key is not None and "event" not in trig:
        raise DefinitionError(file, f"{path}.run_key", "only an event trigger has properties to name runs",
                              "remove run_key:, or trigger the campaign on an event")
    run_key = None if m.run_key is None else _path(m.run_key, file, f"{path}.run_key")
    exits = _exits(m, trig, file, path)
    fallbacks = _fallbacks(m, file, path)
    steps = _steps(m, fallbacks, file, path)
    legacy = m.steps is None and trig["segment"] is not None
    if m.max_runs is not None and not 1 <= m.max_runs <= MAX_RUNS:
        raise DefinitionError(file, f"{path}.max_runs", f"must be between 1 and {MAX_RUNS}, got {m.max_runs}",
                              f"open runs per contact are bounded; the default is {DEFAULT_MAX_RUNS}")
    max_runs = m.max_runs or (1 if trig["segment"] is not None else DEFAULT_MAX_RUNS)
    if "quiet_hours" in m.model_fields_set:
        quiet = None if m.quiet_hours in (None, False) else (m.quiet_hours.start, m.quiet_hours.end)
    else:
        quiet = DEFAULT_QUIET_HOURS.get(m.channel)
    if quiet is not None and quiet[0] == quiet[1]:
        raise DefinitionError(file, f"{path}.quiet_hours", "start and end are equal",
                              "give a window such as {start: \"21:00\", end: \"08:00\"}, or quiet_hours: null for none")
    reentry, reentry_ms = m.reentry
    if len(set(m.products_from)) != len(m.products_from):
        raise DefinitionError(file, f"{path}.products_from", "listed twice", "list each event type once")
    templates = [t for st in steps for v in st.variants for t in (v.subject, v.body, v.html) if t is not None]
    fields = frozenset().union(*(t.info.contact_fields for t in templates))
    uses_products = any(t.info.uses_products for t in templates)
    return Campaign(
        id=m.id, name=m.name or m.id, segment=trig["segment"], on=trig["on"], channel=m.channel,
        priority=m.priority, variants=steps[0].variants, fallbacks=fallbacks, reentry=reentry,
        reentry_ms=reentry_ms, delay_ms=steps[0].after_ms if legacy else 0, quiet=quiet, cap_policy=m.caps,
        max_defer_ms=m.max_defer, max_staleness_ms=m.max_staleness, allow_stale=m.allow_stale,
        products_from=tuple(m.products_from), contact_fields=fields | frozenset(fallbacks),
        uses_products=uses_products, steps=steps, event=trig.get("event"), date=trig.get("date"), exits=exits,
        run_key=run_key, max_runs=max_runs, sequence=not legacy,
        uses_trigger_items=uses_products and ("event" in trig or "catalog" in trig), holdout_bp=m.holdout,
        catalog=trig.get("catalog"),
    )


def _caps(raw: Any, file: str) -> tuple[Cap, ...]:
    if raw is None:
        return DEFAULT_CAPS
    if not isinstance(raw, dict):
        raise DefinitionError(file, "caps", "expected a mapping of email, sms, push, all",
                              "e.g. caps: {sms: {max: 1, per: 72h}, all: {max: 3, per: 24h}}")
    unknown = set(raw) - {"email", "sms", "push", "all"}
    if unknown:
        raise DefinitionError(file, f"caps.{sorted(map(str, unknown))[0]}", "unknown cap",
                              "caps are per channel (email, sms, push) and across channels (all)")
    caps = [c for c in DEFAULT_CAPS if c.name not in raw]  # a key given replaces its default
    for key in ("email", "sms", "push", "all"):
        if key not in raw or raw[key] is None:
            continue  # absent: default kept; null: no cap
        items = raw[key] if isinstance(raw[key], list) else [raw[key]]
        for i, item in enumerate(items):
            p = f"caps.{key}" + (f"[{i}]" if isinstance(raw[key], list) else "")
            if not isinstance(item, dict):
                raise DefinitionError(file, p, "expected {max: N, per: DURATION}", "e.g. {max: 1, per: 16h}")
            m = _validate(_CapM, item, file, p)
            caps.append(Cap(key if len(items) == 1 else f"{key}{i + 1}", None if key == "all" else key, m.max, m.per))
    order = {"email": 0, "sms": 1, "push": 2, None: 3}
    return tuple(sorted(caps, key=lambda c: (order[c.channel], c.per_ms, c.name)))


def _attribution(raw: Any, file: str) -> dict[str, int]:
    """Attribution windows: the SPEC's defaults, each overridable (`attribution: {push_open: 12h}`)."""
    out = dict(DEFAULT_ATTRIBUTION)
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise DefinitionError(file, "attribution", "expected a mapping of windows",
                              "e.g. attribution: {email_open: 3d, push_open: 12h}")
    for key, value in raw.items():
        if key not in DEFAULT_ATTRIBUTION:
            raise DefinitionError(file, f"attribution.{key}", "unknown window",
                                  f"windows are {', '.join(DEFAULT_ATTRIBUTION)}")
        try:
            out[key] = _duration(value)
        except ValueError as exc:
            raise DefinitionError(file, f"attribution.{key}", str(exc), "e.g. 5d or 24h") from None
    if out["remember"] < max(v for k, v in out.items() if k != "remember"):
        raise DefinitionError(file, "attribution.remember", "shorter than a touch window",
                              "remember released messages at least as long as the longest window")
    return out


def _fingerprint(text: str, segments: list[Segment]) -> str:
    return hashlib.sha256((text + repr([s.id for s in segments])).encode()).hexdigest()[:16]


def parse_campaigns(doc: Any, file: str, segments: list[Segment] | None = None, *,
                    default_timezone: str | None = None, text: str = "") -> Campaigns:
    """Campaigns of a parsed YAML document.

    `segments` are those the flow already runs (default: the built-in espresso segments);
    segments defined in the same document are added to them (`Campaigns.segments`).
    `default_timezone` overrides the file's `default_timezone` (else UTC).
    """
    if not isinstance(doc, dict) or "campaigns" not in doc:
        raise DefinitionError(file, "", "expected a mapping with a 'campaigns' list",
                              "start the file with 'campaigns:' (see docs/campaigns.md)")
    unknown = set(doc) - set(_TOP)
    if unknown:
        raise DefinitionError(file, str(sorted(map(str, unknown))[0]), "unknown top-level key",
                              f"top-level keys are {', '.join(_TOP)}")
    known = list(builtin_segments() if segments is None else segments)
    if "segments" in doc:
        own = parse_segments({k: doc[k] for k in ("segments", "include_builtin") if k in doc}, file)
        by_id = {s.id: s for s in known}
        for i, s in enumerate(own):
            if s.id in by_id and by_id[s.id] != s:
                raise DefinitionError(file, f"segments[{i}].id", f"segment {s.id!r} is already defined differently",
                                      "give the campaign file's segment another id")
            if s.id not in by_id:
                known.append(s)
                by_id[s.id] = s
    raw = doc["campaigns"]
    if not isinstance(raw, list) or not raw:
        raise DefinitionError(file, "campaigns", "must be a non-empty list", "add '- id: ...' entries")
    seg_ids = {s.id: s for s in known}
    campaigns: list[Campaign] = []
    seen: dict[str, str] = {}
    for i, node in enumerate(raw):
        c = _campaign(node, seg_ids, file, f"campaigns[{i}]")
        if c.id in seen:
            raise DefinitionError(file, f"campaigns[{i}].id", f"duplicate campaign id {c.id!r} (also {seen[c.id]})",
                                  "give every campaign its own id")
        seen[c.id] = f"campaigns[{i}]"
        campaigns.append(c)
    attribution = _attribution(doc.get("attribution"), file)
    tz = default_timezone if default_timezone is not None else doc.get("default_timezone", "UTC")
    if zone(tz) is None:
        raise DefinitionError(file, "default_timezone", f"unknown time zone {tz!r}",
                              "use an IANA name such as UTC or Europe/Paris")
    return Campaigns(tuple(campaigns), _caps(doc.get("caps"), file), tz, tuple(known), file,
                     _fingerprint(text or repr(doc), known), attribution=attribution)


def load_campaigns(path: str | Path | None, segments: list[Segment] | None = None, *,
                   default_timezone: str | None = None) -> Campaigns:
    """Campaigns from a file, or built-in ones: every built-in file when `path` is None or
    `builtin`, one with `builtin:NAME`."""
    if path is None or is_builtin_name(str(path)):
        name = None if path is None or str(path) == "builtin" else str(path)[8:]
        return builtin_campaigns(segments, default_timezone=default_timezone, names=None if name is None else (name,))
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(str(p), "", f"cannot read: {exc.strerror}", "check the path") from None
    except UnicodeDecodeError:
        raise DefinitionError(str(p), "", "not UTF-8 text", "save the file as UTF-8") from None
    return parse_campaigns(load_yaml(text, str(p)), str(p), segments, default_timezone=default_timezone, text=text)


def builtin_campaigns(segments: list[Segment] | None = None, *, default_timezone: str | None = None,
                      names: tuple[str, ...] | None = None) -> Campaigns:
    """The built-in campaigns (docs/campaigns.md): the espresso campaigns of seed 000 and the
    shop automations of seeds 002-004; `names` picks some of BUILTIN_FILES (default: all).
    Caps and the default time zone come from the first file."""
    out: Campaigns | None = None
    for name in names or tuple(BUILTIN_FILES):
        file = BUILTIN_FILES[name]
        text = resources.files("state").joinpath(file).read_text(encoding="utf-8")
        known = list(out.segments) if out is not None else segments
        c = parse_campaigns(load_yaml(text, file), file, known, default_timezone=default_timezone, text=text)
        if out is None:
            out = c
            continue
        clash = next((x.id for x in c.campaigns if x.id in out.by_id), None)
        if clash is not None:
            raise DefinitionError(file, "campaigns", f"campaign {clash!r} is also in {out.file}", "rename one")
        fingerprint = hashlib.sha256((out.fingerprint + c.fingerprint).encode()).hexdigest()[:16]
        out = Campaigns(out.campaigns + c.campaigns, out.caps, out.default_timezone, c.segments,
                        f"{out.file}+{file}", fingerprint, attribution=out.attribution)
    assert out is not None
    return out
