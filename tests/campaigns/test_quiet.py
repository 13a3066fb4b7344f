"""Quiet hours arithmetic in a contact's zone, including daylight-saving changes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from state.campaigns.quiet import is_quiet, next_allowed, zone
from state.timeutil import format_ms, parse_ts

PARIS, NY = zone("Europe/Paris"), zone("America/New_York")
NIGHT = (21 * 60, 8 * 60)


def nxt(iso: str, tz, window=NIGHT) -> str:
    return format_ms(next_allowed(parse_ts(iso), tz, *window))


def test_window_bounds():
    """Start is quiet, end is not: [21:00, 08:00) local."""
    assert is_quiet(parse_ts("2026-11-20T20:00:00Z"), PARIS, *NIGHT)  # 21:00 Paris
    assert not is_quiet(parse_ts("2026-11-20T19:59:59.999Z"), PARIS, *NIGHT)
    assert not is_quiet(parse_ts("2026-11-21T07:00:00Z"), PARIS, *NIGHT)  # 08:00 Paris
    assert nxt("2026-11-21T06:59:59.999Z", PARIS) == "2026-11-21T07:00:00.000Z"


def test_allowed_instant_is_returned_unchanged():
    """Outside the window, the next allowed instant is the instant itself."""
    assert nxt("2026-11-20T12:00:00.123Z", PARIS) == "2026-11-20T12:00:00.123Z"


def test_window_not_wrapping_midnight():
    """A window like 12:00-14:00 (lunch) works too."""
    assert nxt("2026-11-20T11:30:00Z", PARIS, (12 * 60, 14 * 60)) == "2026-11-20T13:00:00.000Z"


def test_dst_spring_forward_and_fall_back():
    """08:00 local is found whatever the offset change during the night."""
    assert nxt("2026-03-29T00:00:00Z", PARIS) == "2026-03-29T06:00:00.000Z"  # 08:00 CEST
    assert nxt("2026-10-25T00:00:00Z", PARIS) == "2026-10-25T07:00:00.000Z"  # 08:00 CET
    assert nxt("2026-03-08T04:00:00Z", NY) == "2026-03-08T12:00:00.000Z"


def test_end_inside_the_gap():
    """Quiet until 02:30 on a night when 02:00-03:00 does not exist: allowed from the jump."""
    assert nxt("2026-03-29T00:10:00Z", PARIS, (22 * 60, 150)) == "2026-03-29T01:00:00.000Z"


def test_start_inside_the_repeated_hour():
    """Quiet from 02:30: after the clock falls back to 02:00, local time is allowed until 02:30 again."""
    assert nxt("2026-10-25T00:40:00Z", PARIS, (150, 8 * 60)) == "2026-10-25T01:00:00.000Z"
    assert nxt("2026-10-25T01:40:00Z", PARIS, (150, 8 * 60)) == "2026-10-25T07:00:00.000Z"


def test_unknown_zones():
    """Unknown, empty, non-string or path-like zone names give None (the default zone applies)."""
    assert zone("Europe/Paris") is PARIS
    assert all(zone(x) is None for x in ("Mars/Olympus", "", None, 3, "../../etc/passwd", "x" * 100))


ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago", "UTC"]


@settings(max_examples=300, deadline=None)
@given(t=st.integers(parse_ts("2026-01-01T00:00:00Z"), parse_ts("2027-12-31T00:00:00Z")),
       tz=st.sampled_from(ZONES), start=st.integers(0, 1439), end=st.integers(0, 1439))
def test_next_allowed_is_first_non_quiet_instant(t, tz, start, end):
    """next_allowed(t) is not quiet, and every minute-step between t and it is quiet (never dropped, never early)."""
    if start == end:
        return
    z = zone(tz)
    u = next_allowed(t, z, start, end)
    assert u >= t and not is_quiet(u, z, start, end)
    assert u - t < 2 * 86_400_000
    if u > t:
        assert is_quiet(u - 1, z, start, end)
        step = max(1, (u - t) // 200)
        assert all(is_quiet(x, z, start, end) for x in range(t, u, step))
