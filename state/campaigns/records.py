"""What the campaign engine outputs: messages to deliver and decision records (docs/interfaces.md)."""

from __future__ import annotations

from typing import NamedTuple

import xxhash

from ..timeutil import format_ms

__all__ = ["Message", "Decision", "Conversion", "message_id", "conversion_id", "OUTCOMES", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
#: Decision outcomes (docs/interfaces.md). The engine decides all but `failed` by delivery
#: and `skipped_duplicate` by the delivery's Redis check; it also uses `skipped_duplicate`
#: for a re-entry its policy refuses and `failed` for a message it cannot build.
OUTCOMES = ("sent", "skipped_consent", "skipped_duplicate", "skipped_stale", "capped", "deferred",
            "cancelled", "exited", "held_out", "failed")


def conversion_id(contact_id: str, order_event_id: str, group: str, campaign_id: str | None) -> str:
    """Same order, same attribution, same id: consumers drop repeated conversions by it."""
    return xxhash.xxh3_128_hexdigest(f"{contact_id}\x1f{order_event_id}\x1f{group}\x1f{campaign_id}".encode())


def message_id(change_id: str, campaign_id: str) -> str:
    """Idempotency key: the same change and campaign give the same id, on any worker or replay."""
    return xxhash.xxh3_128_hexdigest(f"{change_id}\x1f{campaign_id}".encode())


class Message(NamedTuple):
    """A message released for delivery at event time `due_at` (its decision is `sent`)."""

    message_id: str
    campaign_id: str
    channel: str
    contact_id: str
    variant: str | None
    segment_id: str | None  # None: the run started from an event or a date
    change_id: str | None
    due_at: int
    to: dict
    subject: str | None
    body: str
    html: str | None
    data: dict
    stale: bool = False
    step_id: str | None = None  # None: a one-message campaign
    run_id: str | None = None

    def record(self) -> dict:
        """The JSON object for the retargeting-messages topic (key `contact_id`)."""
        rec = {
            "schema": SCHEMA_VERSION, "message_id": self.message_id, "campaign_id": self.campaign_id,
            "channel": self.channel, "contact_id": self.contact_id, "variant": self.variant,
            "segment_id": self.segment_id, "change_id": self.change_id, "due_at": format_ms(self.due_at),
            "to": dict(self.to), "subject": self.subject, "body": self.body, "data": dict(self.data),
            "run_id": self.run_id, "step_id": self.step_id,
        }
        if self.html is not None:
            rec["html"] = self.html
        if self.stale:
            rec["stale"] = True
        return rec

    def decision(self) -> "Decision":
        """The policy decision `sent` for this message (delivery reports its own outcome later)."""
        return Decision(self.message_id, self.campaign_id, self.channel, self.contact_id, "sent",
                        "stale" if self.stale else "", self.due_at, self.segment_id, self.change_id,
                        self.variant, None, "", self.step_id, self.run_id)


class Decision(NamedTuple):
    """Why a message was not (or not yet) released: one record per decision."""

    message_id: str
    campaign_id: str
    channel: str
    contact_id: str
    outcome: str
    reason: str
    at: int  # event time of the decision
    segment_id: str | None
    change_id: str | None
    variant: str | None
    due_at: int | None  # deferred: when it will be looked at again
    detail: str = ""
    step_id: str | None = None
    run_id: str | None = None

    def record(self) -> dict:
        """The JSON object for the retargeting-decisions topic (key `contact_id`)."""
        rec = {
            "schema": SCHEMA_VERSION, "message_id": self.message_id, "campaign_id": self.campaign_id,
            "channel": self.channel, "contact_id": self.contact_id, "outcome": self.outcome,
            "reason": self.reason, "at": format_ms(self.at), "segment_id": self.segment_id,
            "change_id": self.change_id, "variant": self.variant, "run_id": self.run_id, "step_id": self.step_id,
        }
        if self.due_at is not None:
            rec["due_at"] = format_ms(self.due_at)
        if self.detail:
            rec["detail"] = self.detail
        return rec


class Conversion(NamedTuple):
    """An order attributed to the message last touched before it (`group` "message"),
    counted for a campaign that sent the contact a message in the window before it (`group`
    "sent", touched or not), or for one that held the contact out (`group` "holdout")."""

    conversion_id: str
    order_id: str | None
    contact_id: str
    at: int
    value: float | int | None
    currency: str | None
    message_id: str | None
    campaign_id: str
    variant: str | None
    step_id: str | None
    touch: str | None  # "open" | "click"
    touch_at: int | None
    group: str = "message"

    def record(self) -> dict:
        """The JSON object for the conversions topic (key `contact_id`)."""
        rec = {
            "schema": SCHEMA_VERSION, "conversion_id": self.conversion_id, "order_id": self.order_id,
            "contact_id": self.contact_id, "at": format_ms(self.at), "value": self.value, "currency": self.currency,
            "message_id": self.message_id, "campaign_id": self.campaign_id, "variant": self.variant,
            "step_id": self.step_id, "touch": self.touch,
            "touch_at": None if self.touch_at is None else format_ms(self.touch_at), "group": self.group,
        }
        return rec
