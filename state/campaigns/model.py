"""Campaigns as plain, immutable data: what a definition means (built by `definitions.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import CatalogTrigger
from ..conditions import Filter, Segment
from ..program import CONSENT_TYPE, PROFILE_TYPE, Keep
from .templates import CompiledTemplate

__all__ = ["DEFAULT_ATTRIBUTION", "TOUCHES", "HOLDOUT_WINDOW_OF", "ORDER_TYPE", "Variant", "Step", "EventTrigger", "DateTrigger", "ExitRule", "Campaign", "Cap", "Campaigns",
           "ADDRESS_FIELD", "CHANNELS", "DEFAULT_CAPS", "DEFAULT_QUIET_HOURS", "DEFAULT_MAX_RUNS", "MAX_RUNS"]

CHANNELS = ("email", "sms", "push")
#: Profile field holding a channel's destination (the message's `to`).
ADDRESS_FIELD = {"email": "email", "sms": "phone", "push": "push_token"}
TIMEZONE_FIELD = "timezone"
#: SMS is intrusive: by default never between 21:00 and 08:00 in the contact's time zone.
DEFAULT_QUIET_HOURS = {"sms": (21 * 60, 8 * 60)}


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B test (or the only arm, named "", of a campaign without variants)."""

    name: str
    weight: int
    subject: CompiledTemplate | None
    body: CompiledTemplate
    html: CompiledTemplate | None
    data: dict


#: Attribution windows (SPEC "Conversions"): a touch at `s` is inside at order time `o` when
#: `o - window < s <= o`; `remember` bounds how old a released message a touch may name.
DEFAULT_ATTRIBUTION = {"email_open": 5 * 86_400_000, "email_click": 5 * 86_400_000,
                       "sms_click": 5 * 86_400_000, "push_open": 86_400_000, "remember": 30 * 86_400_000}
#: Touch event type -> (channel of the message it names, "open" | "click").
TOUCHES = {"email_open": ("email", "open"), "email_click": ("email", "click"),
           "sms_click": ("sms", "click"), "push_open": ("push", "open")}
#: The window that bounds a channel's holdout conversions (its click window, SPEC).
HOLDOUT_WINDOW_OF = {"email": "email_click", "sms": "sms_click", "push": "push_open"}
ORDER_TYPE = "order_placed"

#: Open runs per contact and campaign when a file says nothing, and the most it may ask for:
#: a new run beyond it supersedes the oldest (decision `cancelled`, reason `superseded`).
DEFAULT_MAX_RUNS = 3
MAX_RUNS = 20


@dataclass(frozen=True)
class Step:
    """One message of a run, due `after_ms` after the trigger; id "" for a one-message campaign."""

    id: str
    after_ms: int
    variants: tuple[Variant, ...]

    @property
    def total_weight(self) -> int:
        return sum(v.weight for v in self.variants)


@dataclass(frozen=True)
class EventTrigger:
    """A run per event of `type` whose properties pass `filters`."""

    type: str
    filters: tuple[Filter, ...] = ()

    def matches(self, props: dict) -> bool:
        return all(f.matches(props) for f in self.filters)


@dataclass(frozen=True)
class DateTrigger:
    """Yearly at `at_min` minutes after local midnight on the month and day of profile `field`."""

    field: str
    at_min: int


@dataclass(frozen=True)
class ExitRule:
    """An event that ends a run: of `type`, passing `filters`, and for each (exit path,
    trigger path) of `match` some value of the exit event equal to one of the trigger's."""

    type: str
    filters: tuple[Filter, ...] = ()
    match: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()

    def matches(self, props: dict) -> bool:
        return all(f.matches(props) for f in self.filters)


@dataclass(frozen=True)
class Campaign:
    """A campaign; exactly one of `segment`, `event`, `date`, `catalog` says what starts a run.

    One-message campaigns (no `steps:` in the file) are runs of one step with id "" whose
    `after` is the `delay`; they keep the message ids and decisions they always had
    (`sequence` False).
    """

    id: str
    name: str
    segment: str | None
    on: str  # "enter" | "exit" (segment triggers)
    channel: str
    priority: int
    variants: tuple[Variant, ...]  # of the first step
    fallbacks: dict
    reentry: str  # "once" | "every_time" | "once_per"
    reentry_ms: int  # the once_per duration (0 otherwise)
    delay_ms: int
    quiet: tuple[int, int] | None  # (start, end) in minutes after local midnight
    cap_policy: str  # "defer" | "skip"
    max_defer_ms: int
    max_staleness_ms: int | None
    allow_stale: bool
    products_from: tuple[str, ...]
    contact_fields: frozenset[str] = frozenset()
    uses_products: bool = False
    steps: tuple[Step, ...] = ()
    event: EventTrigger | None = None
    date: DateTrigger | None = None
    exits: tuple[ExitRule, ...] = ()
    run_key: tuple[str, ...] | None = None
    max_runs: int = 1
    sequence: bool = False
    uses_trigger_items: bool = False  # templates read `products` of an event trigger's `items`
    holdout_bp: int = 0  # share of contacts held out, in basis points (10% -> 1000)
    catalog: CatalogTrigger | None = None  # runs per (contact, product) on catalogue updates

    @property
    def total_weight(self) -> int:
        return sum(v.weight for v in self.variants)

    @property
    def kind(self) -> str:
        if self.segment is not None:
            return "segment"
        return "event" if self.event is not None else "catalog" if self.catalog is not None else "date"


@dataclass(frozen=True)
class Cap:
    """At most `max` messages within any `per` ms (rolling, `t - per < s <= t`) on `channel` (None: all)."""

    name: str
    channel: str | None
    max: int
    per_ms: int


#: Frequency caps per contact when a file says nothing: email 1 per 16 h, push 1 per 24 h,
#: SMS 1 per 72 h, and at most 3 messages per 24 h across channels.
DEFAULT_CAPS = (
    Cap("email", "email", 1, 16 * 3_600_000),
    Cap("sms", "sms", 1, 72 * 3_600_000),
    Cap("push", "push", 1, 24 * 3_600_000),
    Cap("all", None, 3, 24 * 3_600_000),
)


@dataclass(frozen=True)
class Campaigns:
    """A loaded campaign file: campaigns, caps, the default time zone and the segments to run."""

    campaigns: tuple[Campaign, ...]
    caps: tuple[Cap, ...] = DEFAULT_CAPS
    default_timezone: str = "UTC"
    segments: tuple[Segment, ...] = ()
    file: str = ""
    fingerprint: str = ""
    by_id: dict = field(default_factory=dict, compare=False)
    attribution: dict = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTION))

    def __post_init__(self) -> None:
        self.by_id.update({c.id: c for c in self.campaigns})

    def required_keep(self) -> Keep:
        """What the segment compiler must keep so campaigns can decide and render (`compile_program(..., keep)`)."""
        channels = sorted({c.channel for c in self.campaigns})
        fields = {TIMEZONE_FIELD} if self.campaigns else set()
        items: set[str] = set()
        for c in self.campaigns:
            fields.add(ADDRESS_FIELD[c.channel])
            fields |= c.contact_fields
            if c.date is not None:
                fields.add(c.date.field)
            if c.uses_products and not c.uses_trigger_items:  # else the trigger event's own items
                items.update(c.products_from)
        fields.discard("id")  # the contact id, not a profile field
        return Keep(consent_channels=tuple(channels), profile_fields=tuple(sorted(fields)),
                    items_of=tuple(sorted(items)))

    def catalog_horizon_ms(self) -> int:
        """The longest window a catalog trigger looks back (0: no catalog triggers)."""
        return max((c.catalog.within_ms for c in self.campaigns if c.catalog is not None), default=0)

    def state_types(self) -> frozenset[str]:
        """Event types that change what campaigns read from the shard (consent, profile, items)."""
        keep = self.required_keep()
        types = set(keep.items_of)
        if keep.consent_channels:
            types.add(CONSENT_TYPE)
        if keep.profile_fields:
            types.add(PROFILE_TYPE)
        return frozenset(types)
