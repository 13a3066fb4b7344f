"""Event-time arithmetic in integer epoch milliseconds.

Integers keep window boundaries exact (`t - W < e <= t`) where floats would round.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

__all__ = ["NEVER", "MAX_TS", "parse_ts", "format_ms", "parse_duration", "format_duration", "wall_ms"]

#: Sentinel for "no timestamp" in integer columns; lower than any valid event time.
NEVER = -(2**62)
#: Largest accepted event time (year 9999), so arithmetic never overflows int64 columns.
MAX_TS = 253402300799999

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_ts(value: object) -> int | None:
    """Event time in epoch ms, or None when `value` is neither ISO-8601 with offset nor int ms."""
    if type(value) is int:
        return value if 0 <= value <= MAX_TS else None
    if type(value) is not str:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    ms = (dt - _EPOCH) // _MS
    return ms if 0 <= ms <= MAX_TS else None


_MINUTES: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DDTHH:MM:", bounded below
_SECONDS = [f"{s:02d}." for s in range(60)]
_MILLIS = [f"{m:03d}Z" for m in range(1000)]


def format_ms(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the format of every instant espresso writes.

    Called for every change written, so the calendar part is cached per minute (changes
    cluster in time) and the rest comes from tables.
    """
    minute, rest = divmod(ms, 60_000)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) >= 100_000:
            _MINUTES.clear()
        prefix = _MINUTES[minute] = (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
    sec, milli = divmod(rest, 1000)
    return prefix + _SECONDS[sec] + _MILLIS[milli]


def parse_duration(text: object) -> int | None:
    """Milliseconds in a duration such as `72h`, `90d`, `1h30m`, `500ms`; None if malformed."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        return None
    if isinstance(text, int):
        return None  # a bare number has no unit: refuse rather than guess
    s = text.strip().replace(" ", "")
    pos, total = 0, 0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        return None
    return total


def format_duration(ms: int) -> str:
    """Shortest exact rendering of a duration, for messages and docs."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def wall_ms() -> int:
    """The wall clock in epoch ms: for callers at the edges (sources, flows), never the engine."""
    return time.time_ns() // 1_000_000
