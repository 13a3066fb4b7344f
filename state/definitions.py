"""Load segment definitions from YAML into `conditions` data, with errors that say the fix.

Each leaf is a pydantic model (types, unknown keys, ranges); the tree walk here adds the
path in the file, e.g. `segments[2].when.all[1].event.within`, to every message.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .conditions import (
    Abandoned, All, AnyOf, Condition, Consent, EventCount, Filter, Inactive, Lifetime, Not,
    Profile, Segment, Selector,
)
from .errors import DefinitionError
from .timeutil import parse_duration

__all__ = ["load_segments", "parse_segments", "builtin_segments", "load_yaml", "BUILTIN_FILE", "FilterModel"]

BUILTIN_FILE = "builtin/espresso.yaml"
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_OPS = ("equals", "not_equals", "in", "contains", ">", "<", ">=", "<=")
_CMP = (">", "<", "=", ">=", "<=")
_KINDS = ("all", "any", "not", "consent", "event", "lifetime", "inactive", "abandoned_checkout", "profile")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(v: Any) -> int:
    ms = parse_duration(v)
    if ms is None or ms <= 0:
        raise ValueError(f"must be a positive duration such as 72h, 90d, 30m or 1h30m, got {v!r}")
    return ms


class _FilterM(_Strict):
    property: str
    op: Literal["equals", "not_equals", "in", "contains", ">", "<", ">=", "<="]
    value: Any

    @model_validator(mode="after")
    def _check(self) -> "_FilterM":
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("op 'in' needs a list value, e.g. value: [FR, BE]")
        if self.op in (">", "<", ">=", "<=") and (isinstance(self.value, bool) or not isinstance(self.value, (int, float))):
            raise ValueError(f"op {self.op!r} needs a number value, got {self.value!r}")
        return self

    def build(self) -> Filter:
        return Filter(tuple(self.property.split(".")), self.op, self.value)


#: The property filter of the segment language, for other definition files (campaign triggers).
FilterModel = _FilterM


class _EventM(_Strict):
    type: str
    within: Any = None
    at_least: int | None = None
    at_most: int | None = None
    exactly: int | None = None
    where: list[_FilterM] = []

    @model_validator(mode="after")
    def _check(self) -> "_EventM":
        given = [k for k in ("at_least", "at_most", "exactly") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of at_least, at_most, exactly (zero times: exactly: 0)")
        if getattr(self, given[0]) < 0:
            raise ValueError(f"{given[0]} must be >= 0")
        return self

    @field_validator("within")
    @classmethod
    def _w(cls, v: Any) -> Any:
        return None if v is None else _duration(v)


class _ConsentM(_Strict):
    channel: Literal["email", "sms", "push"]
    reasons: list[str] | None = None


class _LifetimeM(_Strict):
    type: str
    aggregate: Literal["count", "sum"] = "count"
    property: str | None = None
    op: Literal[">", "<", "=", ">=", "<="]
    value: float
    where: list[_FilterM] = []

    @model_validator(mode="after")
    def _check(self) -> "_LifetimeM":
        if self.aggregate == "sum" and not self.property:
            raise ValueError("aggregate 'sum' needs the property to add up, e.g. property: value")
        return self


class _InactiveM(_Strict):
    type: str
    duration: Any
    include_never: bool = False
    where: list[_FilterM] = []

    @field_validator("duration")
    @classmethod
    def _d(cls, v: Any) -> int:
        return _duration(v)


class _AbandonedM(_Strict):
    after: Any
    expires_after: Any = None
    started: str = "checkout_started"
    completed: str = "order_placed"

    @field_validator("after")
    @classmethod
    def _a(cls, v: Any) -> int:
        return _duration(v)

    @field_validator("expires_after")
    @classmethod
    def _e(cls, v: Any) -> int | None:
        return None if v is None else _duration(v)


class _ProfileM(_Strict):
    field: str
    op: Literal["equals", "in", "contains", ">", "<", ">=", "<=", "exists"]
    value: Any = None


def _pydantic_problem(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return loc, "unknown key; check the spelling against docs/segments.md"
    return loc, msg


def _leaf(model: type[_Strict], body: Any, file: str, path: str) -> Any:
    if not isinstance(body, dict):
        raise DefinitionError(file, path, f"expected a mapping, got {type(body).__name__}",
                              "write the condition's settings as key: value lines")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        loc, msg = _pydantic_problem(exc)
        raise DefinitionError(file, f"{path}.{loc}" if loc else path, msg,
                              "see the condition reference in docs/segments.md") from None


def _selector(type_: str, where: list[_FilterM]) -> Selector:
    return Selector(type_, tuple(f.build() for f in where))


def parse_condition(node: Any, file: str, path: str) -> Condition:
    """One condition: a mapping with exactly one key naming its kind."""
    if not isinstance(node, dict) or len(node) != 1:
        raise DefinitionError(file, path, "a condition is a mapping with exactly one key",
                              f"use one of: {', '.join(_KINDS)}")
    (kind, body), = node.items()
    sub = f"{path}.{kind}"
    if kind in ("all", "any"):
        if not isinstance(body, list) or not body:
            raise DefinitionError(file, sub, f"'{kind}' needs a non-empty list of conditions",
                                  f"write '{kind}:' followed by '- condition' lines")
        items = tuple(parse_condition(c, file, f"{sub}[{i}]") for i, c in enumerate(body))
        return All(items) if kind == "all" else AnyOf(items)
    if kind == "not":
        return Not(parse_condition(body, file, sub))
    if kind == "consent":
        m = _leaf(_ConsentM, body, file, sub)
        return Consent(m.channel, tuple(m.reasons) if m.reasons else None)
    if kind == "event":
        m = _leaf(_EventM, body, file, sub)
        op = next(k for k in ("at_least", "at_most", "exactly") if getattr(m, k) is not None)
        sel = _selector(m.type, m.where)
        if m.within is None:
            cmp = {"at_least": ">=", "at_most": "<=", "exactly": "="}[op]
            return Lifetime(sel, "count", None, cmp, float(getattr(m, op)))
        return EventCount(sel, m.within, op, getattr(m, op))
    if kind == "lifetime":
        m = _leaf(_LifetimeM, body, file, sub)
        prop = tuple(m.property.split(".")) if m.property else None
        return Lifetime(_selector(m.type, m.where), m.aggregate, prop, m.op, m.value)
    if kind == "inactive":
        m = _leaf(_InactiveM, body, file, sub)
        return Inactive(_selector(m.type, m.where), m.duration, m.include_never)
    if kind == "abandoned_checkout":
        m = _leaf(_AbandonedM, body, file, sub)
        if m.expires_after is not None and m.expires_after <= m.after:
            raise DefinitionError(file, f"{sub}.expires_after", "must be longer than 'after'",
                                  "e.g. after: 1h, expires_after: 14d")
        return Abandoned(Selector(m.started), Selector(m.completed), m.after, m.expires_after)
    if kind == "profile":
        m = _leaf(_ProfileM, body, file, sub)
        return Profile(m.field, m.op, m.value)
    raise DefinitionError(file, path, f"unknown condition kind {kind!r}", f"use one of: {', '.join(_KINDS)}")


def _segment(node: Any, file: str, path: str) -> Segment:
    if not isinstance(node, dict):
        raise DefinitionError(file, path, "a segment is a mapping with id and when", "see docs/segments.md")
    unknown = set(node) - {"id", "name", "description", "when"}
    if unknown:
        raise DefinitionError(file, f"{path}.{sorted(unknown)[0]}", "unknown key",
                              "a segment has only id, name, description and when")
    sid = node.get("id")
    if not isinstance(sid, str) or not _ID.match(sid):
        raise DefinitionError(file, f"{path}.id", f"missing or invalid segment id {sid!r}",
                              "use lowercase letters, digits, '-', '_' or '.', e.g. id: win-back-90d")
    if "when" not in node:
        raise DefinitionError(file, f"{path}.when", "missing", "give the segment's condition under 'when:'")
    return Segment(sid, parse_condition(node["when"], file, f"{path}.when"),
                   str(node.get("name", "")), str(node.get("description", "")))


def parse_segments(doc: Any, file: str) -> list[Segment]:
    """Segments of a parsed YAML document; `include_builtin: true` adds the built-ins first."""
    if not isinstance(doc, dict) or "segments" not in doc:
        raise DefinitionError(file, "", "expected a mapping with a 'segments' list",
                              "start the file with 'segments:' (see docs/segments.md)")
    unknown = set(doc) - {"segments", "include_builtin", "campaigns"}
    if unknown:
        raise DefinitionError(file, sorted(unknown)[0], "unknown top-level key",
                              "top-level keys are segments, include_builtin and campaigns")
    raw = doc["segments"]
    if not isinstance(raw, list) or not raw:
        raise DefinitionError(file, "segments", "must be a non-empty list", "add '- id: ...' entries")
    segments = builtin_segments() if doc.get("include_builtin") else []
    seen = {s.id: "built-in" for s in segments}
    for i, node in enumerate(raw):
        seg = _segment(node, file, f"segments[{i}]")
        if seg.id in seen:
            raise DefinitionError(file, f"segments[{i}].id", f"duplicate segment id {seg.id!r} (also {seen[seg.id]})",
                                  "give every segment its own id")
        seen[seg.id] = f"segments[{i}]"
        segments.append(seg)
    return segments


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML; a syntax error names the file, line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DefinitionError(file, where, f"not valid YAML: {exc.problem}",
                              "check indentation and quoting at that line") from None


def load_segments(path: str | Path | None = None) -> list[Segment]:
    """Segments from a file, or the built-in espresso segments when `path` is None."""
    if path is None:
        return builtin_segments()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(str(p), "", f"cannot read: {exc.strerror}", "check the path") from None
    return parse_segments(load_yaml(text, str(p)), str(p))


def builtin_segments() -> list[Segment]:
    text = resources.files("state").joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    return parse_segments(load_yaml(text, BUILTIN_FILE), BUILTIN_FILE)
