"""Yearly date triggers: parsing, windows across DST and extreme zones, against a brute force."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.campaigns.dates import next_fire, parse_month_day
from state.campaigns.quiet import zone
from state.timeutil import format_ms, parse_ts

UTC, PARIS, NY = zone("UTC"), zone("Europe/Paris"), zone("America/New_York")
KIRITIMATI, PAGO = zone("Pacific/Kiritimati"), zone("Pacific/Pago_Pago")
NINE = 9 * 60


def fire(value, at, tz, iso, done=None):
    r = next_fire(value, at, tz, parse_ts(iso), done)
    return None if r is None else (format_ms(r[0]), r[1])


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("03-15", (3, 15)), ("1990-03-15", (3, 15)), ("02-29", (2, 29)), ("2023-02-29", (2, 29)),
    ("12-31", (12, 31)), ("01-01", (1, 1)),
])
def test_parse_valid(value, expected):
    assert parse_month_day(value) == expected


@pytest.mark.parametrize("value", [
    "02-30", "04-31", "13-01", "00-10", "05-00", "5-1", "05-1", "", " 05-01", "05-01 ", "05/01",
    "1990-05-01T00:00", "90-05-01", "１２-01", None, 501, ["05-01"], {"m": 5}, b"05-01", "x" * 5000,
])
def test_invalid_values_never_fire(value):
    assert parse_month_day(value) is None
    assert next_fire(value, NINE, UTC, 0, None) is None


def test_at_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        next_fire("05-01", 1440, UTC, 0, None)


# --- window bounds -------------------------------------------------------------------------


def test_window_bounds_utc():
    """[09:00, next midnight): start fires at x, one ms before waits, end-1 fires, end is next year."""
    o = "2026-05-01T09:00:00.000Z"
    assert fire("05-01", NINE, UTC, o) == (o, 2026)
    assert fire("05-01", NINE, UTC, "2026-05-01T08:59:59.999Z") == (o, 2026)
    assert fire("05-01", NINE, UTC, "2026-05-01T09:00:00.001Z") == ("2026-05-01T09:00:00.001Z", 2026)
    assert fire("05-01", NINE, UTC, "2026-05-01T23:59:59.999Z") == ("2026-05-01T23:59:59.999Z", 2026)
    assert fire("05-01", NINE, UTC, "2026-05-02T00:00:00.000Z") == ("2027-05-01T09:00:00.000Z", 2027)


def test_done_year_skips_to_next_year():
    assert fire("05-01", NINE, UTC, "2026-05-01T10:00:00Z", done=2026) == ("2027-05-01T09:00:00.000Z", 2027)
    assert fire("05-01", NINE, UTC, "2026-01-10T00:00:00Z", done=2026) == ("2027-05-01T09:00:00.000Z", 2027)
    assert fire("05-01", NINE, UTC, "2026-05-01T10:00:00Z", done=2025) == ("2026-05-01T10:00:00.000Z", 2026)
    assert fire("05-01", NINE, UTC, "2026-05-01T10:00:00Z", done=2030) == ("2031-05-01T09:00:00.000Z", 2031)


def test_year_prefix_is_ignored():
    assert fire("1985-05-01", NINE, UTC, "2026-02-01T00:00:00Z") == ("2026-05-01T09:00:00.000Z", 2026)


def test_feb_29():
    """Leap years fire on 02-29; other years on 02-28, not on 03-01 and not skipped."""
    assert fire("02-29", NINE, UTC, "2027-01-01T00:00:00Z") == ("2027-02-28T09:00:00.000Z", 2027)
    assert fire("2000-02-29", NINE, UTC, "2028-01-01T00:00:00Z") == ("2028-02-29T09:00:00.000Z", 2028)
    assert fire("02-29", NINE, UTC, "2028-02-28T12:00:00Z") == ("2028-02-29T09:00:00.000Z", 2028)
    assert fire("02-29", NINE, UTC, "2027-03-01T00:00:00Z") == ("2028-02-29T09:00:00.000Z", 2028)
    assert fire("02-29", NINE, UTC, "2028-02-29T23:59:59.999Z") == ("2028-02-29T23:59:59.999Z", 2028)
    assert fire("02-29", NINE, UTC, "2100-01-01T00:00:00Z") == ("2100-02-28T09:00:00.000Z", 2100)


def test_paris_spring_gap_reads_with_old_offset():
    """02:30 does not exist on 2026-03-29 in Paris; fold=0 reads it at +01:00, i.e. 03:30 CEST."""
    assert fire("03-29", 150, PARIS, "2026-01-01T00:00:00Z") == ("2026-03-29T01:30:00.000Z", 2026)
    # The window still ends at local midnight (+02:00), and within it x fires at once.
    assert fire("03-29", 150, PARIS, "2026-03-29T21:59:59.999Z") == ("2026-03-29T21:59:59.999Z", 2026)
    assert fire("03-29", 150, PARIS, "2026-03-29T22:00:00Z") == ("2027-03-29T00:30:00.000Z", 2027)


def test_paris_autumn_repeated_hour_is_first_occurrence():
    assert fire("10-25", 150, PARIS, "2026-10-01T00:00:00Z") == ("2026-10-25T00:30:00.000Z", 2026)
    # Midnight before the change is at +02:00, midnight after it at +01:00: a 25-hour day.
    assert fire("10-25", 0, PARIS, "2026-10-24T21:59:59.999Z") == ("2026-10-24T22:00:00.000Z", 2026)
    assert fire("10-25", 0, PARIS, "2026-10-25T22:59:59.999Z") == ("2026-10-25T22:59:59.999Z", 2026)


def test_new_york_dst():
    assert fire("03-08", 150, NY, "2026-03-01T00:00:00Z") == ("2026-03-08T07:30:00.000Z", 2026)  # 03:30 EDT
    assert fire("11-01", 90, NY, "2026-10-01T00:00:00Z") == ("2026-11-01T05:30:00.000Z", 2026)  # 01:30 EDT
    assert fire("11-01", 90, NY, "2026-11-01T06:30:00Z") == ("2026-11-01T06:30:00.000Z", 2026)  # 01:30 EST
    assert fire("11-01", 90, NY, "2026-11-02T04:59:59.999Z") == ("2026-11-02T04:59:59.999Z", 2026)
    assert fire("11-01", 90, NY, "2026-11-02T05:00:00Z") == ("2027-11-01T05:30:00.000Z", 2027)


def test_extreme_offsets():
    """+14 reaches a local date 14 h before UTC does; -11 eleven hours after; years are local."""
    assert fire("01-01", NINE, KIRITIMATI, "2025-12-01T00:00:00Z") == ("2025-12-31T19:00:00.000Z", 2026)
    assert fire("01-01", NINE, KIRITIMATI, "2026-01-01T09:59:59.999Z") == ("2026-01-01T09:59:59.999Z", 2026)
    assert fire("01-01", NINE, KIRITIMATI, "2026-01-01T10:00:00Z") == ("2026-12-31T19:00:00.000Z", 2027)
    assert fire("12-31", 23 * 60, PAGO, "2026-12-31T12:00:00Z") == ("2027-01-01T10:00:00.000Z", 2026)
    assert fire("12-31", 23 * 60, PAGO, "2027-01-01T10:59:59.999Z") == ("2027-01-01T10:59:59.999Z", 2026)
    assert fire("12-31", 23 * 60, PAGO, "2027-01-01T11:00:00Z") == ("2028-01-01T10:00:00.000Z", 2027)
    assert fire("12-31", 23 * 60, PAGO, "2027-01-01T10:30:00Z", done=2026) == ("2028-01-01T10:00:00.000Z", 2027)


def test_skipped_day_never_fires():
    """Samoa skipped 2011-12-30 entirely: that year's window is empty, the next year fires."""
    assert fire("12-30", NINE, zone("Pacific/Apia"), "2011-12-01T00:00:00Z") == ("2012-12-29T19:00:00.000Z", 2012)


# --- against a brute force -------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago",
         "America/Havana", "America/Santiago", "Australia/Lord_Howe"]  # the last three: DST at midnight / 30 min
_NAIVE_EPOCH = datetime(1970, 1, 1)


def _first_instant(wall: datetime, tz) -> int:
    """Epoch seconds of naive local `wall`, found by walking UTC minutes (not by zoneinfo's fold).

    The first minute whose local time reaches `wall` is the first occurrence (fold=0) when the
    time exists; when it jumped over `wall` (a gap), fold=0 reads `wall` with the offset just
    before the jump.
    """
    t = int((wall - _NAIVE_EPOCH).total_seconds()) - 15 * 3600  # before any offset (<= +14h) gets there
    # Hours at a time while more than 2 h short: the local clock gains at most 1 h per hour
    # plus a jump of at most 1 h in these zones, so no minute in between can reach `wall`.
    while datetime.fromtimestamp(t + 3600, tz).replace(tzinfo=None) < wall - timedelta(hours=2):
        t += 3600
    prev = None
    while True:
        local = datetime.fromtimestamp(t, tz).replace(tzinfo=None)
        if local >= wall:
            if local == wall:
                return t
            offset_before = prev - (_NAIVE_EPOCH + timedelta(seconds=t - 60))
            return int((wall - offset_before - _NAIVE_EPOCH).total_seconds())
        prev = local
        t += 60


def _reference(month, day, at, tz, x, done):
    best = None
    utc_year = (_NAIVE_EPOCH + timedelta(milliseconds=x)).year
    for y in range(utc_year - 1, utc_year + 3 if done is None else max(utc_year, done) + 3):
        if done is not None and y <= done:
            continue
        d = day if (month, day) != (2, 29) or (y % 4 == 0 and (y % 100 or y % 400 == 0)) else 28
        local_day = date(y, month, d)
        start = 1000 * _first_instant(datetime(y, month, d, at // 60, at % 60), tz)
        end = 1000 * _first_instant(datetime.combine(local_day + timedelta(days=1), datetime.min.time()), tz)
        if start < end and x < end:
            cand = (max(x, start), y)
            best = cand if best is None or cand < best else best
    return best


LO, HI = parse_ts("2024-01-01T00:00:00Z"), parse_ts("2031-01-01T00:00:00Z")
_month_day = st.integers(1, 12).flatmap(
    lambda m: st.tuples(st.just(m), st.integers(1, (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m])))


@settings(max_examples=300, deadline=None)
@given(
    md=_month_day | st.sampled_from([(2, 29), (3, 29), (3, 8), (10, 25), (11, 1), (1, 1), (12, 31)]),
    at=st.integers(0, 1439) | st.sampled_from([0, 90, 120, 150, 1439]),
    tz=st.sampled_from(ZONES).map(zone),
    x=st.integers(LO, HI),
    done=st.none() | st.integers(-2, 1),
    year_prefix=st.booleans(),
)
def test_matches_brute_force(md, at, tz, x, done, year_prefix):
    month, day = md
    value = f"{'1999-' if year_prefix else ''}{month:02d}-{day:02d}"
    done_year = None if done is None else (_NAIVE_EPOCH + timedelta(milliseconds=x)).year + done
    assert next_fire(value, at, tz, x, done_year) == _reference(month, day, at, tz, x, done_year)


@settings(max_examples=150, deadline=None)
@given(
    md=st.sampled_from([(3, 29), (10, 25), (3, 8), (11, 1), (3, 31), (10, 27), (2, 29)]),
    at=st.integers(0, 1439),
    tz=st.sampled_from(["Europe/Paris", "America/New_York"]).map(zone),
    year=st.integers(2024, 2030),
    delta=st.integers(-2 * 86_400_000, 2 * 86_400_000),
    done=st.none() | st.integers(-1, 0),
)
def test_matches_brute_force_near_the_day(md, at, tz, year, delta, done):
    """x within two days of the date, where the window edges are."""
    month, day = md
    d = day if (month, day) != (2, 29) or year % 4 == 0 else 28
    x = int((datetime(year, month, d) - _NAIVE_EPOCH).total_seconds()) * 1000 + delta
    value = f"{month:02d}-{day:02d}"
    done_year = None if done is None else year + done
    assert next_fire(value, at, tz, x, done_year) == _reference(month, day, at, tz, x, done_year)
