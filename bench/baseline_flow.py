"""The straightforward baseline: one Bytewax `StatefulLogic` per contact holding Python lists.

    python bench/baseline_flow.py EVENTS.jsonl --until 2026-11-26T00:00:00Z --out CHANGES.jsonl

This is what a competent first implementation of the three built-in segments of SPEC.md
(`email-espresso`, `sms-espresso`, `push-espresso`) on Bytewax 0.21.1 looks like, used by
`bench/replay_bench.py` as the point of comparison. It is independent of the engine
(imports nothing from `state/` or `flows/`).

Dataflow::

    FileSource (lines, batches of 1000)
      -> filter_map "parse"    orjson.loads + validation; events of types no built-in
                               segment uses are dropped here; invalid lines become dead letters
      -> branch                valid events / dead letters (-> DEAD_LETTERS JSONL)
      -> key_on contact_id
      -> stateful "segments"   one ContactLogic per contact
      -> output                change record as in docs/interfaces.md -> OUT JSONL

Per contact (`ContactLogic`): sorted Python lists of epoch-ms timestamps of email opens,
email clicks, sms clicks, push opens and orders within the last 72 h (older ones are
pruned whenever the contact is evaluated), the latest consent per channel as a
`{channel: (ts, status)}` dict (same-ts tie: `unsubscribed` wins), the current membership
of the three segments, the contact's event-time clock, a per-contact change counter and
the ids of its last 8 events.

What it does:
* Exact event-time semantics for input in event-time order: an event at `e` is in the
  window at `t` iff `t - 72h < e <= t`; membership is evaluated at every event instant and
  at every window boundary (`e + 72h`) in between, so time-driven exits and re-entries
  carry their exact `at`.
* Events with the same timestamp are all applied before membership is evaluated at that
  instant: evaluation of an instant is deferred until the contact's next later event,
  `on_eof`, or `on_notify` once an event with a later time has been read by the source
  (`notify_at` asks for it as soon as possible then, and polls every 10 ms before).
* Time: on each event, boundaries strictly before the event's time are evaluated first.
  `notify_at` returns the next boundary translated to wall-clock like Bytewax's own
  `EventClock` does (`now + (boundary - watermark)`, watermark = greatest event time read
  so far); `on_notify` evaluates boundaries strictly before the watermark. In a fast
  replay those wall-clock times lie in the future, so a contact that has no further event
  gets its time-driven changes at end of input: `on_eof` runs time to `--until`
  (inclusive). The *set* of changes (and their `at`) is exact; only their position in
  the output file is late for idle contacts.
* Drops a redelivered event whose id is among the contact's last 8 event ids
  (`--recent-ids`; they are ~30% of its per-contact memory).
* Invalid lines go to a dead-letter JSONL file with a reason code (not JSON, not an
  object, missing/mistyped field, bad ts, bad properties, bad consent).

What it does not do (on purpose, it is a baseline): no recovery/snapshots are configured,
no correction of late (out-of-order) events beyond applying them at the contact's
current clock, no custom segment definitions, no Kafka, no metrics, one worker.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Tuple

import orjson
import xxhash
from bytewax import operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

__all__ = ["build_flow", "ContactLogic", "parse_line", "main"]

WINDOW_MS = 72 * 3600 * 1000
SEGMENTS = ("email-espresso", "sms-espresso", "push-espresso")
USED_TYPES = frozenset({"email_open", "email_click", "sms_click", "push_open", "order_placed", "consent_changed"})
CHANNELS = ("email", "sms", "push")
STATUSES = ("subscribed", "unsubscribed")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_ASAP = _EPOCH  # a notification time that has always passed
_POLL = timedelta(milliseconds=10)
_EMPTY: tuple = ()
MAX_TS = 253402300799999

#: Greatest event time parsed so far (single worker): the baseline's event-time watermark.
_WATERMARK = [0]
_COUNTS = {"changes": 0, "dead_letters": 0}


def parse_ts(value: Any) -> Optional[int]:
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
    ms = (dt - _EPOCH) // _ONE_MS
    return ms if 0 <= ms <= MAX_TS else None


def format_ms(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class DeadLetter:
    __slots__ = ("reason", "detail", "raw")

    def __init__(self, reason: str, detail: str, raw: str) -> None:
        self.reason, self.detail, self.raw = reason, detail, raw


def parse_line(line: str):
    """A tuple `(contact_id, ts_ms, type, event_id, channel, status)`, a DeadLetter, or None
    (blank line or a type no built-in segment uses)."""
    if not line.strip():
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return DeadLetter("not_json", str(exc)[:200], line)
    if type(obj) is not dict:
        return DeadLetter("not_object", type(obj).__name__, line)
    eid, cid, etype, raw_ts = obj.get("event_id"), obj.get("contact_id"), obj.get("type"), obj.get("ts")
    for name, v in (("event_id", eid), ("contact_id", cid), ("type", etype)):
        if type(v) is not str or not v:
            return DeadLetter("missing_field" if v is None else "bad_field", f"{name}: {v!r}"[:200], line)
    ts = parse_ts(raw_ts)
    if ts is None:
        return DeadLetter("missing_field" if raw_ts is None else "bad_ts", f"ts: {raw_ts!r}"[:200], line)
    props = obj.get("properties")
    if props is not None and type(props) is not dict:
        return DeadLetter("bad_properties", type(props).__name__, line)
    channel = status = None
    if etype == "consent_changed":
        props = props or {}
        channel, status = props.get("channel"), props.get("status")
        reason = props.get("reason")
        if channel not in CHANNELS or status not in STATUSES or (reason is not None and type(reason) is not str):
            return DeadLetter("bad_consent", f"channel={channel!r} status={status!r}"[:200], line)
    if ts > _WATERMARK[0]:
        _WATERMARK[0] = ts
    if etype not in USED_TYPES:
        return None
    return (cid, ts, etype, eid, channel, status)


class ContactLogic(StatefulLogic):
    """All of one contact's segment state; see the module docstring."""

    def __init__(self, until_ms: int, recent_ids: int = 8) -> None:
        self.until = until_ms
        self.keep_ids = recent_ids
        self.opens: list[int] = []
        self.clicks: list[int] = []
        self.sms: list[int] = []
        self.push: list[int] = []
        self.orders: list[int] = []
        self.consent: dict[str, tuple[int, str]] = {}
        self.member = [False, False, False]
        self.clock = -1
        self.pending: Optional[tuple[str, str]] = None  # cause of the not yet evaluated instant `clock`
        self.seq = 0
        self.recent: list[str] = []

    # -- state ---------------------------------------------------------------------------
    def _apply(self, ts: int, etype: str, channel: Optional[str], status: Optional[str], late: bool) -> None:
        if etype == "consent_changed":
            cur = self.consent.get(channel)  # type: ignore[arg-type]
            if cur is None or ts > cur[0] or (ts == cur[0] and status == "unsubscribed"):
                self.consent[channel] = (ts, status)  # type: ignore[index]
            return
        lst = (self.opens if etype == "email_open" else self.clicks if etype == "email_click"
               else self.sms if etype == "sms_click" else self.push if etype == "push_open" else self.orders)
        if late:
            bisect.insort(lst, ts)
        else:
            lst.append(ts)

    def _next_boundary(self) -> Optional[int]:
        b = None
        for lst in (self.opens, self.clicks, self.sms, self.push, self.orders):
            if lst and (b is None or lst[0] < b):
                b = lst[0]
        return None if b is None else b + WINDOW_MS

    def _subscribed(self, channel: str) -> bool:
        cur = self.consent.get(channel)
        return cur is not None and cur[1] == "subscribed"

    def _evaluate(self, t: int, cause: Optional[tuple[str, str]], out: list) -> None:
        """Membership at instant `t` (all events <= t applied); append the changes to `out`."""
        lo = t - WINDOW_MS
        for lst in (self.opens, self.clicks, self.sms, self.push, self.orders):
            while lst and lst[0] <= lo:
                del lst[0]
        no_order = not self.orders
        now = (
            no_order and bool(self.opens or self.clicks) and self._subscribed("email"),
            no_order and bool(self.sms) and self._subscribed("sms"),
            no_order and bool(self.push) and self._subscribed("push"),
        )
        member = self.member
        for i in range(3):
            if now[i] != member[i]:
                member[i] = now[i]
                self.seq += 1
                expires = None
                if now[i]:
                    if i == 0:
                        last = max(self.opens[-1] if self.opens else -1, self.clicks[-1] if self.clicks else -1)
                    else:
                        last = (self.sms if i == 1 else self.push)[-1]
                    expires = last + WINDOW_MS
                out.append((SEGMENTS[i], "enter" if now[i] else "exit", t, self.seq, cause, expires))

    def _advance(self, until: int, inclusive: bool, out: list) -> None:
        """Evaluate every window boundary b with clock < b < until (or <= until)."""
        while True:
            b = self._next_boundary()
            if b is None or b > until or (b == until and not inclusive):
                return
            if b > self.clock:
                self.clock = b
            self._evaluate(b, None, out)

    def _flush(self, out: list) -> None:
        if self.pending is not None:
            cause, self.pending = self.pending, None
            self._evaluate(self.clock, cause, out)

    # -- StatefulLogic -------------------------------------------------------------------
    def on_item(self, value: tuple) -> Tuple[Iterable[tuple], bool]:
        _cid, ts, etype, eid, channel, status = value
        if self.keep_ids:
            recent = self.recent
            if eid in recent:
                return _EMPTY, StatefulLogic.RETAIN
            recent.append(eid)
            if len(recent) > self.keep_ids:
                del recent[0]
        out: list = []
        if ts > self.clock:
            self._flush(out)
            self._advance(ts, False, out)
            self.clock = ts
            self._apply(ts, etype, channel, status, False)
        else:  # same instant (or late: applied at the contact's current clock)
            self._apply(ts, etype, channel, status, ts < self.clock)
        self.pending = (eid, etype)
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> Tuple[Iterable[tuple], bool]:
        out: list = []
        wm = _WATERMARK[0]
        if self.pending is not None and wm > self.clock:  # a later event has been read: instant complete
            self._flush(out)
        if self.pending is None:
            self._advance(wm, False, out)
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> Tuple[Iterable[tuple], bool]:
        out: list = []
        self._flush(out)
        self._advance(self.until, True, out)
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        wm = _WATERMARK[0]
        if self.pending is not None:
            # Evaluate the instant once an event with a later time has been read (input is
            # in event-time order); until then more events of this instant may come.
            return _ASAP if wm > self.clock else datetime.now(timezone.utc) + _POLL
        b = self._next_boundary()
        if b is None:
            return None
        if b < wm:
            return _ASAP
        return datetime.now(timezone.utc) + timedelta(milliseconds=b - wm + 1)

    def snapshot(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                for k, v in self.__dict__.items()}


# -- output ------------------------------------------------------------------------------

def encode_change(item: tuple) -> bytes:
    cid, (segment, direction, at, seq, cause, expires) = item
    _COUNTS["changes"] += 1
    key = f"{cid}\x1f{segment}\x1f{direction}\x1f{at}\x1f{seq}".encode()
    return orjson.dumps({
        "schema": 1,
        "change_id": xxhash.xxh3_128_hexdigest(key),
        "contact_id": cid,
        "segment_id": segment,
        "direction": direction,
        "at": format_ms(at),
        "seq": seq,
        "cause": {"kind": "time"} if cause is None else {"kind": "event", "event_id": cause[0], "type": cause[1]},
        "expires_at": None if expires is None else format_ms(expires),
        "late": False,
    })


def encode_dead(d: DeadLetter) -> bytes:
    _COUNTS["dead_letters"] += 1
    return orjson.dumps({"reason": d.reason, "detail": d.detail, "raw": d.raw})


class _JsonLinesPartition(StatelessSinkPartition):
    def __init__(self, path: Path, encode) -> None:
        self._f = open(path, "wb", buffering=1 << 20)
        self._encode = encode

    def write_batch(self, items: list) -> None:
        # Encode one item at a time: orjson.dumps returns a bytes object that keeps its
        # ~4 KB working buffer, so a list of a whole batch of them costs ~4 KB per item.
        write, encode = self._f.write, self._encode
        for item in items:
            write(encode(item))
            write(b"\n")

    def close(self) -> None:
        self._f.close()


class JsonLinesSink(DynamicSink):
    """Writes `encode(item)` as one line per item; one worker."""

    def __init__(self, path: Path, encode) -> None:
        self.path = Path(path)
        self.encode = encode

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonLinesPartition:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return _JsonLinesPartition(self.path, self.encode)


def build_flow(events: Path, until_ms: int, out: Path, dead_letters: Path, batch_size: int = 1000,
               recent_ids: int = 8) -> Dataflow:
    flow = Dataflow("baseline")
    lines = op.input("in", flow, FileSource(events, batch_size=batch_size))
    parsed = op.filter_map("parse", lines, parse_line)
    split = op.branch("valid", parsed, lambda x: type(x) is tuple)
    keyed = op.key_on("key", split.trues, lambda e: e[0])
    changes = op.stateful("segments", keyed, lambda _resume: ContactLogic(until_ms, recent_ids))
    op.output("changes", changes, JsonLinesSink(out, encode_change))
    op.output("dead", split.falses, JsonLinesSink(dead_letters, encode_dead))
    return flow


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("events", type=Path)
    p.add_argument("--until", required=True, help="ISO-8601 instant time runs to (inclusive)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dead-letters", type=Path, help="default: OUT.dead-letters.jsonl")
    p.add_argument("--batch-size", type=int, default=1000, help="lines per FileSource batch (default 1000)")
    p.add_argument("--recent-ids", type=int, default=8,
                   help="event ids remembered per contact to drop redeliveries (default 8; 0: no dedup)")
    a = p.parse_args(argv)
    until = parse_ts(a.until)
    if until is None:
        p.error(f"--until: not an ISO-8601 instant with offset or Z: {a.until!r}")
    if not a.events.is_file():
        print(f"baseline: {a.events}: no such file", file=sys.stderr)
        return 2
    dead = a.dead_letters or a.out.with_name(a.out.stem + ".dead-letters.jsonl")
    run_main(build_flow(a.events, until, a.out, dead, a.batch_size, a.recent_ids))
    print(f"baseline: {_COUNTS['changes']} changes -> {a.out}; {_COUNTS['dead_letters']} invalid lines -> {dead}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
