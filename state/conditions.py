"""The segment language as plain, immutable data: what a definition means, not how it runs.

`definitions.py` builds these from YAML; `program.py` turns them into compact state and
fast evaluators; the brute-force test oracle reads them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "Filter", "Selector", "All", "AnyOf", "Not", "Consent", "EventCount", "Lifetime",
    "Inactive", "Abandoned", "Profile", "Condition", "Segment", "compare", "resolve",
]

_MISSING = object()


def resolve(props: Any, path: tuple[str, ...]) -> list:
    """Values at a dotted path; lists met on the way are flattened (`items.product_id`)."""
    values = [props]
    for key in path:
        nxt = []
        for v in values:
            if isinstance(v, list):
                for x in v:
                    if isinstance(x, dict) and key in x:
                        nxt.append(x[key])
            elif isinstance(v, dict) and key in v:
                nxt.append(v[key])
        values = nxt
        if not values:
            break
    return values


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps `true` apart from `1`, as a marketer would expect."""
    return a == b and (type(a) is bool) == (type(b) is bool)


def compare(actual: Any, op: str, expected: Any) -> bool:
    """One comparison of the language; a type mismatch is simply false, never an error."""
    if op == "equals" or op == "=":
        return _same(actual, expected)
    if op == "in":
        return any(_same(actual, e) for e in expected)
    if op == "contains":
        if isinstance(actual, list):
            return expected in actual
        return isinstance(actual, str) and isinstance(expected, str) and expected in actual
    if op == "exists":
        return actual is not None
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return False
    if op == ">":
        return actual > expected
    if op == "<":
        return actual < expected
    if op == ">=":
        return actual >= expected
    if op == "<=":
        return actual <= expected
    raise ValueError(f"unknown operator {op!r}")


@dataclass(frozen=True)
class Filter:
    """A property filter on an event: some value at `path` satisfies `op value`."""

    path: tuple[str, ...]
    op: str
    value: Any

    def matches(self, props: dict) -> bool:
        if self.op == "not_equals":  # no value there equals it (a missing property passes)
            return not any(_same(v, self.value) for v in resolve(props, self.path))
        return any(compare(v, self.op, self.value) for v in resolve(props, self.path))


@dataclass(frozen=True)
class Selector:
    """Which events a condition counts: a type and filters that must all hold."""

    type: str
    filters: tuple[Filter, ...] = ()

    def matches(self, props: dict) -> bool:
        return all(f.matches(props) for f in self.filters)


@dataclass(frozen=True)
class All:
    items: tuple["Condition", ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple["Condition", ...]


@dataclass(frozen=True)
class Not:
    item: "Condition"


@dataclass(frozen=True)
class Consent:
    """Latest consent for `channel` is subscribed (and, if given, with one of `reasons`)."""

    channel: str
    reasons: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EventCount:
    """Matching events within the last `within` ms compare to `n` (`at_least`/`at_most`/`exactly`)."""

    selector: Selector
    within: int
    op: str
    n: int


@dataclass(frozen=True)
class Lifetime:
    """A lifetime count, or sum of a numeric property, of matching events compared to `value`."""

    selector: Selector
    aggregate: str  # "count" | "sum"
    prop: tuple[str, ...] | None
    op: str
    value: float


@dataclass(frozen=True)
class Inactive:
    """Has not done the event for `duration` ms (win-back); never-did counts only if asked."""

    selector: Selector
    duration: int
    include_never: bool = False


@dataclass(frozen=True)
class Abandoned:
    """Latest `started` event is at least `after` old with no `completed` event since it.

    Membership ends at `started + expires` when `expires` is set (reminders stop).
    """

    started: Selector
    completed: Selector
    after: int
    expires: int | None = None


@dataclass(frozen=True)
class Profile:
    """The latest value of profile field `field` satisfies `op value`."""

    field: str
    op: str
    value: Any = None


Condition = Union[All, AnyOf, Not, Consent, EventCount, Lifetime, Inactive, Abandoned, Profile]


@dataclass(frozen=True)
class Segment:
    id: str
    when: Condition
    name: str = ""
    description: str = ""
