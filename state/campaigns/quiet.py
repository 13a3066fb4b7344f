"""Quiet hours in a contact's own time zone, exact across daylight-saving changes.

A quiet window `[start, end)` is a range of local wall-clock times (minutes after midnight,
wrapping past midnight when `start > end`, e.g. 21:00-08:00). An instant is quiet when its
local time in the contact's zone falls in the window. `next_allowed(t)` is the first
instant at or after `t` that is not quiet: usually the next local `end`; if a DST change
jumps the local clock over `end` (spring forward) or back out of the window (fall back),
it is the instant of that jump. Everything is integer epoch milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["zone", "is_quiet", "next_allowed", "local_ms_of_day", "DAY_MS"]

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@lru_cache(maxsize=4096)
def zone(name: object) -> ZoneInfo | None:
    """The IANA zone `name`, or None when it is not a known zone (the caller's default applies)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError for malformed keys, OSError...
        return None


def _offset_ms(t: int, tz: ZoneInfo) -> int:
    dt = (_EPOCH + timedelta(milliseconds=t)).astimezone(tz)
    return int(dt.utcoffset() // timedelta(milliseconds=1))


def local_ms_of_day(t: int, tz: ZoneInfo) -> int:
    """Local wall-clock time of instant `t`, in ms after local midnight."""
    return (t + _offset_ms(t, tz)) % DAY_MS


def _in_window(tod: int, start: int, end: int) -> bool:
    if start < end:
        return start <= tod < end
    return tod >= start or tod < end


def is_quiet(t: int, tz: ZoneInfo, start_min: int, end_min: int) -> bool:
    return _in_window(local_ms_of_day(t, tz), start_min * 60_000, end_min * 60_000)


def next_allowed(t: int, tz: ZoneInfo, start_min: int, end_min: int) -> int:
    """First instant >= `t` outside the quiet window `[start_min, end_min)` local time."""
    start, end = start_min * 60_000, end_min * 60_000
    u = t
    for _ in range(16):  # each round crosses one offset change; a day has at most a couple
        off = _offset_ms(u, tz)
        tod = (u + off) % DAY_MS
        if not _in_window(tod, start, end):
            return u
        cand = u + (end - tod) % DAY_MS  # local clock reaches `end` if the offset holds
        if _offset_ms(cand, tz) == off:
            return cand
        # The offset changes before `end`: find the instant of the change, look again there.
        lo, hi = u, cand  # offset(lo) == off != offset(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset_ms(mid, tz) == off:
                lo = mid
            else:
                hi = mid
        u = hi
    return u
