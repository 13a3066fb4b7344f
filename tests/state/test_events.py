"""Event intake: valid events parse, every invalid one gets a precise reason."""

from __future__ import annotations

import orjson
import pytest

from state.events import Event, Invalid, parse_event
from state.timeutil import format_ms, parse_duration, parse_ts


def ev(**kw) -> bytes:
    base = {"event_id": "e1", "contact_id": "c1", "type": "email_open", "ts": "2026-11-20T09:15:00.123Z"}
    base.update(kw)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_iso_and_epoch_ms_mean_the_same_instant():
    """`ts` as ISO-8601 with Z, with an offset, or integer epoch ms all give one instant."""
    a = parse_event(ev(ts="2026-11-20T09:15:00.123Z"))
    b = parse_event(ev(ts="2026-11-20T10:15:00.123+01:00"))
    c = parse_event(ev(ts=a.ts))
    assert isinstance(a, Event) and a.ts == b.ts == c.ts
    assert format_ms(a.ts) == "2026-11-20T09:15:00.123Z"


@pytest.mark.parametrize("raw, reason, words", [
    (b"not json", "not_json", "not JSON"),
    (b"[1, 2]", "not_object", "got list"),
    (ev(event_id=...), "missing_field", "event_id: required"),
    (ev(contact_id=""), "bad_field", "contact_id must be a non-empty string"),
    (ev(type=3), "bad_field", "type must be"),
    (ev(ts=...), "missing_field", "ts: required"),
    (ev(ts="yesterday"), "bad_ts", "'yesterday'"),
    (ev(ts="2026-11-20T09:15:00"), "bad_ts", "with offset"),  # no offset: ambiguous
    (ev(ts=1.5e12), "bad_ts", "epoch ms"),
    (ev(ts=-5), "bad_ts", ""),
    (ev(properties=[1]), "bad_properties", "must be an object"),
    (ev(type="consent_changed", properties={"channel": "fax", "status": "subscribed"}), "bad_consent", "channel"),
    (ev(type="consent_changed", properties={"channel": "sms", "status": "maybe"}), "bad_consent", "status"),
])
def test_invalid_input_has_a_precise_reason(raw, reason, words):
    """Each kind of bad input is rejected with its own reason code and a detail naming the field."""
    got = parse_event(raw)
    assert isinstance(got, Invalid)
    assert got.reason == reason
    assert words in got.detail


def test_size_limit():
    """A record over the size limit is rejected before parsing."""
    got = parse_event(ev(properties={"blob": "x" * 2000}), max_bytes=1024)
    assert got.reason == "too_large" and "limit 1024" in got.detail


def test_durations():
    """Durations combine units; bare numbers are refused rather than guessed."""
    assert parse_duration("72h") == 72 * 3600_000
    assert parse_duration("1h30m") == 90 * 60_000
    assert parse_duration("500ms") == 500
    assert parse_duration("72") is None and parse_duration(72) is None and parse_duration("h") is None
    assert parse_ts("2026-13-01T00:00:00Z") is None
