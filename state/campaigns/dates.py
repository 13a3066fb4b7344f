"""When a yearly date trigger fires (a birthday message at 09:00 the contact's local time).

Contract, in integer epoch milliseconds UTC:

- A date value is a string `MM-DD` or `YYYY-MM-DD` (ASCII digits; the year, if any, is
  ignored: only the anniversary matters). Anything else, including impossible days such as
  `02-30` or `13-01`, non-strings and `""`, is invalid and never fires. `02-29` is valid and
  falls on `02-28` in non-leap years, so those contacts are not skipped three years in four.
- `at` is minutes after local midnight, 0..1439.
- For local year Y in zone z the occurrence window is `W_Y = [O_Y, E_Y)`: `O_Y` is the local
  wall time (Y, month, day) at `at`, `E_Y` the local midnight that starts the next day. Wall
  times become instants with zoneinfo and `fold=0`, exactly as Python's datetime does: a time
  in a spring-forward gap is read with the offset before the change (02:30 in a 02:00->03:00
  gap is 03:30 new time), an ambiguous one is its first occurrence. A window can be empty
  when a zone skips the whole day (Pacific/Apia, 2011-12-30); such a year never fires.
- The trigger fires for year Y at most once, at the first instant of W_Y at which the engine
  looks: the scheduled instant, or any change of the contact's profile (the field or the
  zone). Hence `next_fire(x)`: `x` itself if it lies inside a window of a year not yet done,
  else the start of the next such window. A changed birthday or zone that lands the contact
  inside today's window fires at once; one that moves the window past fires next time.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["parse_month_day", "window", "next_fire"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_DAY = timedelta(days=1)
_VALUE = re.compile(r"(?:[0-9]{4}-)?([0-9]{2})-([0-9]{2})")
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February as in a leap year
_YEAR_MS = 31_556_952_000  # mean Gregorian year
_MIN_YEAR, _MAX_YEAR = 2, 9998  # keeps the day after / the year before inside datetime's range


def parse_month_day(value: object) -> tuple[int, int] | None:
    """(month, day) of a date value, or None when it is not a valid `MM-DD` / `YYYY-MM-DD`."""
    if type(value) is not str or len(value) > 10:
        return None  # the length check also keeps junk out of the cache
    return _parse(value)


@lru_cache(maxsize=4096)  # profile values repeat (birthdays); bounded so junk cannot grow it
def _parse(value: str) -> tuple[int, int] | None:
    m = _VALUE.fullmatch(value)
    if m is None:
        return None
    month, day = int(m.group(1)), int(m.group(2))
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS[month]:
        return None
    return month, day


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


@lru_cache(maxsize=65536)  # few distinct (day, at, zone) in practice; each costs two tz lookups
def window(month: int, day: int, at_min: int, tz: ZoneInfo, year: int) -> tuple[int, int]:
    """`(O_Y, E_Y)` in epoch ms for local `year`; empty (`O_Y >= E_Y`) if the zone skips the day."""
    if month == 2 and day == 29 and not _is_leap(year):
        day = 28
    start = datetime(year, month, day, at_min // 60, at_min % 60, tzinfo=tz)  # fold=0
    nxt = date(year, month, day) + _DAY
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return (start - _EPOCH) // _MS, (end - _EPOCH) // _MS


def next_fire(value: object, at_min: int, tz: ZoneInfo, x: int, done_year: int | None) -> tuple[int, int] | None:
    """`(instant, year)` of the earliest instant >= `x` in a window of a year > `done_year`.

    None when `value` is invalid (or no year fits in datetime's range). `done_year` is the
    last local year already fired (None: never), so a year fires at most once even if the
    profile changes inside its window.
    """
    if not 0 <= at_min < 1440:
        raise ValueError(f"at_min must be in 0..1439, got {at_min}")
    md = parse_month_day(value)
    if md is None:
        return None
    month, day = md
    # Local year of x, give or take one (offsets are < 1 day, the mean year drifts < 2 days);
    # starting two years early is cheap (cached windows) and cannot miss: windows are ordered
    # and disjoint, so the first non-empty window not yet over at x holds the answer.
    year = max(1970 + x // _YEAR_MS - 2, _MIN_YEAR)
    if done_year is not None and done_year >= year:
        year = done_year + 1
    for y in range(year, min(year + 8, _MAX_YEAR + 1)):
        start, end = window(month, day, at_min, tz, y)
        if x < end and start < end:
            return (x if x > start else start), y
    return None
