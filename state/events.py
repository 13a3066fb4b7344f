"""Contact-event intake: parse and validate one raw input record.

Invalid input is returned as `Invalid` (a reason code and a human detail), never raised,
so one bad record cannot stop the flow and every one can go to a dead-letter sink.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from datetime import datetime, timedelta, timezone

from .timeutil import MAX_TS, parse_ts

__all__ = [
    "Event", "Invalid", "parse_event", "DEFAULT_MAX_EVENT_BYTES", "CONSENT_CHANNELS",
    "CONSENT_STATUSES", "REASONS",
]

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
CONSENT_CHANNELS = ("email", "sms", "push")
CONSENT_STATUSES = ("subscribed", "unsubscribed")

#: Dead-letter reason of a valid event stamped further ahead of the clock than the allowed
#: skew (decided by the intake, which knows the clock).
FUTURE_TS = "future_ts"
#: Stable reason codes of dead letters (also metric label values).
REASONS = (
    "not_json", "not_object", "too_large", "missing_field", "bad_field", "bad_ts",
    "bad_properties", "bad_consent", FUTURE_TS,
)

_EMPTY: dict = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_fromiso = datetime.fromisoformat
_new_event = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


class Event(NamedTuple):
    """A valid contact event; `ts` is event time in epoch milliseconds."""

    event_id: str
    contact_id: str
    type: str
    ts: int
    properties: dict


class Invalid(NamedTuple):
    """Why a raw record was rejected: `reason` is a code from REASONS, `detail` says more."""

    reason: str
    detail: str


def _check_consent(props: dict) -> Invalid | None:
    channel, status = props.get("channel"), props.get("status")
    if channel not in CONSENT_CHANNELS:
        return Invalid("bad_consent", f"properties.channel must be one of {list(CONSENT_CHANNELS)}: {channel!r}")
    if status not in CONSENT_STATUSES:
        return Invalid("bad_consent", f"properties.status must be one of {list(CONSENT_STATUSES)}: {status!r}")
    reason = props.get("reason")
    if reason is not None and type(reason) is not str:
        return Invalid("bad_consent", f"properties.reason must be a string: {reason!r}")
    return None


def bad_field(name: str, value: object, what: str = "a non-empty string") -> Invalid:
    """A required field that is missing, or not `what`."""
    if value is None:
        return Invalid("missing_field", f"{name}: required")
    return Invalid("bad_field", f"{name} must be {what}: {value!r}"[:200])


def bad_ts(raw_ts: object) -> Invalid:
    if raw_ts is None:
        return Invalid("missing_field", "ts: required")
    return Invalid("bad_ts", f"ts must be ISO-8601 with offset or integer epoch ms: {raw_ts!r}"[:200])


def load_object(raw: bytes | str, max_bytes: int) -> dict | Invalid:
    """The JSON object of one input record (contact event or product update)."""
    if len(raw) > max_bytes:
        return Invalid("too_large", f"record is {len(raw)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", f"not JSON: {exc}"[:200])
    if type(obj) is not dict:
        return Invalid("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def properties_of(obj: dict) -> dict | Invalid:
    """`properties` of a record: an object, or an empty one when absent (shared: never mutate it)."""
    props = obj.get("properties")
    if props is None:
        return _EMPTY
    if type(props) is not dict:
        return Invalid("bad_properties", f"properties must be an object, got {type(props).__name__}")
    return props


def parse_event(raw: bytes | str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event | Invalid:
    """Parse one JSON record; the hot path of intake, so the field checks are inlined."""
    obj = load_object(raw, max_bytes)
    if type(obj) is Invalid:
        return obj
    eid = obj.get("event_id")
    if type(eid) is not str or not eid:
        return bad_field("event_id", eid)
    cid = obj.get("contact_id")
    if type(cid) is not str or not cid:
        return bad_field("contact_id", cid)
    etype = obj.get("type")
    if type(etype) is not str or not etype:
        return bad_field("type", etype)
    raw_ts = obj.get("ts")
    ts = None
    if type(raw_ts) is str:  # inlined parse_ts: the common case on the hot path
        try:
            dt = _fromiso(raw_ts)
            if dt.tzinfo is not None:
                ts = (dt - _EPOCH) // _MS
                if not 0 <= ts <= MAX_TS:
                    ts = None
        except ValueError:
            pass
    elif type(raw_ts) is int:
        ts = parse_ts(raw_ts)
    if ts is None:
        return bad_ts(raw_ts)
    props = properties_of(obj)
    if type(props) is Invalid:
        return props
    if etype == "consent_changed":
        bad = _check_consent(props)
        if bad is not None:
            return bad
    return _new_event(Event, (eid, cid, etype, ts, props))
