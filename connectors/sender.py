"""Sender: delivers message records concurrently, exactly once, off the dataflow thread.

    dataflow thread                      sender thread (asyncio loop)
    ---------------                      -----------------------------------------------
    submit(msg) --(bounded inbox)--> dispatcher: batch -> claim in Redis (one pipeline)
       blocks while max_queued             claimed   -> deliver task (<= max_in_flight)
       messages are unfinished             sent      -> decision skipped_duplicate
                                           held      -> parked, claimed again later
                                        deliver: channel.send -> mark sent | release + DLQ
                                        on_result(decision record) for every message

Every submitted message ends with exactly one decision record passed to `on_result`
(`sent`, `failed` with a reason, or `skipped_duplicate`), called on the sender thread.
A message is "unfinished" from `submit` until its decision is reported; at most
`max_queued` are unfinished, so when the channel or Redis is slow or down, `submit` blocks
and back-pressure reaches the dataflow. While Redis cannot be reached, nothing is claimed
nor sent: the sender retries with backoff and resumes when Redis is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self


from connectors.delivery import Channel, DeliveryConfigError, SendResult
from connectors.idempotency import (
    CLAIMED,
    HELD,
    MARK_KEPT,
    MARK_TAKEN,
    RECLAIMED,
    SENT,
    IdempotencyStore,
    StoreUnavailable,
)
from state.timeutil import format_ms

__all__ = [
    "Sender",
    "SenderClosed",
    "SenderConfig",
    "SenderStats",
    "dead_letter_record",
    "decision_record",
]

log = logging.getLogger(__name__)


class SenderClosed(RuntimeError):
    """`submit` after `close`, or the sender thread has stopped on an internal error."""


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """Bounds and pacing.

    `max_in_flight`: sends running at once. `max_queued`: unfinished messages (waiting,
    claiming, sending, recording) before `submit` blocks. `claim_batch`: claims per Redis
    round trip. `store_backoff_s`/`store_backoff_max_s`: retry pacing while Redis is down.
    `held_poll_s`: how often a message claimed elsewhere is looked at again.
    """

    max_in_flight: int = 64
    max_queued: int = 2048
    claim_batch: int = 256
    store_backoff_s: float = 0.05
    store_backoff_max_s: float = 2.0
    held_poll_s: float = 1.0
    name: str = "sender"

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_queued", "claim_batch"):
            if getattr(self, name) < 1:
                raise DeliveryConfigError(f'"{name}" must be >= 1: {getattr(self, name)}')
        if self.max_queued < self.max_in_flight:
            raise DeliveryConfigError(
                f'"max_queued" must be >= "max_in_flight": {self.max_queued} < {self.max_in_flight}')
        if not 0 < self.store_backoff_s <= self.store_backoff_max_s:
            raise DeliveryConfigError(
                f'"store_backoff_s" must be > 0 and <= "store_backoff_max_s": '
                f"{self.store_backoff_s}, {self.store_backoff_max_s}")
        if self.held_poll_s <= 0:
            raise DeliveryConfigError(f'"held_poll_s" must be > 0: {self.held_poll_s}')


@dataclass(slots=True)
class SenderStats:
    """Counters since start (read with `Sender.stats()`, a copy).

    `lost_claims`: sends whose claim another sender took over meanwhile (possible duplicates);
    `missing_claims`: sends whose key had vanished from Redis when marked (Redis lost data).
    """

    submitted: int = 0
    sent: int = 0
    failed: int = 0
    duplicates: int = 0
    lost_claims: int = 0
    missing_claims: int = 0
    store_outages: int = 0
    unfinished: int = 0
    store_down: bool = False


def decision_record(message: Mapping[str, Any], outcome: str, reason: str = "", *,
                    at_ms: int | None = None, latency_ms: float | None = None,
                    attempts: int = 0, detail: str = "") -> dict:
    """Decision record (docs/interfaces.md) for `message`, plus latency, attempts and detail."""
    record = {
        "schema": 1,
        "message_id": message.get("message_id"),
        "campaign_id": message.get("campaign_id"),
        "channel": message.get("channel"),
        "contact_id": message.get("contact_id"),
        "variant": message.get("variant"),
        "step_id": message.get("step_id"),
        "outcome": outcome,
        "reason": reason,
        "at": format_ms(at_ms if at_ms is not None else time.time_ns() // 1_000_000),
        "attempts": attempts,
    }
    if latency_ms is not None:
        record["latency_ms"] = round(latency_ms, 3)
    if detail:
        record["detail"] = detail
    return record


def dead_letter_record(message: Mapping[str, Any], result: SendResult, channel: str) -> dict:
    """Dead-letter record for a message whose delivery failed for good (docs/delivery.md)."""
    return {
        "schema": 1,
        "reason": result.reason,
        "detail": result.detail,
        "channel": channel,
        "attempts": result.attempts,
        "at": format_ms(time.time_ns() // 1_000_000),
        "message": dict(message),
    }


@dataclass(slots=True)
class _Item:
    message: Mapping[str, Any]
    token: str
    submitted: float = field(default_factory=time.perf_counter)
    claim: str = ""
    not_before: float = 0.0


class Sender:
    """Delivers message records through channels with Redis idempotency; see module doc.

    `channels` maps a record's `channel` (`email`, `sms`, `push`...) to a channel; `default`
    takes the others (e.g. the Kafka `retargeting-messages` topic). `on_result` receives every
    decision record, `dead_letter` every dead-letter record; both are called on the sender
    thread and must be quick and thread-safe (a confluent-kafka `produce` is).
    """

    def __init__(self, config: SenderConfig, store: IdempotencyStore, channels: Mapping[str, Channel],
                 *, default: Channel | None = None, on_result: Callable[[dict], None] | None = None,
                 dead_letter: Callable[[dict], None] | None = None, rng: random.Random | None = None) -> None:
        if not channels and default is None:
            raise DeliveryConfigError("sender: no channel given (channels is empty and default is None)")
        self.config = config
        self._store = store
        self._channels = dict(channels)
        self._default = default
        self._on_result = on_result or (lambda record: None)
        self._dead_letter = dead_letter or (lambda record: None)
        self._rng = rng or random.Random()
        self._check_lease()
        self._cond = threading.Condition()
        self._inbox: deque[_Item] = deque()
        self._unfinished = 0
        self._waiting = 0  # threads in submit/flush waiting on _cond
        # a blocked submit is woken when this many are unfinished (fewer thread switches)
        self._low_water = config.max_queued - max(1, config.max_queued // 8)
        self._wake_scheduled = False
        self._closed = False
        self._failure: BaseException | None = None
        self._stats = SenderStats()
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _all_channels(self) -> list[Channel]:
        seen: dict[int, Channel] = {id(c): c for c in self._channels.values()}
        if self._default is not None:
            seen[id(self._default)] = self._default
        return list(seen.values())

    def _check_lease(self) -> None:
        longest = max(c.max_duration_s for c in self._all_channels())
        if self._store.lease_s <= longest:
            raise DeliveryConfigError(
                f'idempotency "lease_s" must exceed the longest send ({longest:.1f}s with retries): '
                f"{self._store.lease_s}")

    # ---- dataflow thread -------------------------------------------------------------

    def start(self) -> Sender:
        """Start the sender thread and the channels; raises their start-up errors."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._main(ready, errors))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"espresso-{self.config.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            self._thread.join()
            self._failure = errors[0]
            raise errors[0]
        return self

    def submit(self, message: Mapping[str, Any], timeout: float | None = None) -> None:
        """Queue one message record; blocks while `max_queued` messages are unfinished.

        Raises `TimeoutError` when `timeout` passes first, `SenderClosed` after `close`.
        """
        if not isinstance(message, Mapping):
            raise TypeError(f"sender {self.config.name}: submit expects a message record (a mapping), "
                            f"got {type(message).__name__}")
        if self._thread is None:
            raise SenderClosed(f"sender {self.config.name} is not started: call start() first")
        item = _Item(message, str(next(self._tokens)))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._unfinished >= self.config.max_queued and not self._closed and self._failure is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"sender {self.config.name}: queue full for {timeout}s")
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1
            if self._closed or self._failure is not None:
                raise SenderClosed(f"sender {self.config.name} is closed") from self._failure
            self._unfinished += 1
            self._stats.submitted += 1
            self._inbox.append(item)
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        if wake:
            assert self._loop is not None, "Sender.start() was not called"
            self._loop.call_soon_threadsafe(self._wake.set)

    def submit_many(self, messages: list[Mapping[str, Any]]) -> None:
        """`submit` of each message in order, taking the lock and waking the loop once per
        run of messages that fit (deliver hands over a consumed batch at a time)."""
        if self._thread is None:
            raise SenderClosed(f"sender {self.config.name} is not started: call start() first")
        for m in messages:
            if not isinstance(m, Mapping):
                raise TypeError(f"sender {self.config.name}: submit expects a message record (a mapping), "
                                f"got {type(m).__name__}")
        tokens, start, limit = self._tokens, 0, self.config.max_queued
        while start < len(messages):
            with self._cond:
                while self._unfinished >= limit and not self._closed and self._failure is None:
                    self._waiting += 1
                    try:
                        self._cond.wait()
                    finally:
                        self._waiting -= 1
                if self._closed or self._failure is not None:
                    raise SenderClosed(f"sender {self.config.name} is closed") from self._failure
                end = min(len(messages), start + limit - self._unfinished)
                now = time.perf_counter()
                self._inbox.extend(_Item(m, str(next(tokens)), now) for m in messages[start:end])
                self._unfinished += end - start
                self._stats.submitted += end - start
                start = end
                wake = not self._wake_scheduled
                self._wake_scheduled = True
            if wake:
                assert self._loop is not None, "Sender.start() was not called"
                self._loop.call_soon_threadsafe(self._wake.set)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted message has its decision; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._unfinished and self._failure is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1
            return self._unfinished == 0

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush (up to `timeout`), then stop; True when nothing was left unfinished.

        Messages still unfinished after `timeout` get no decision: their claims expire after
        the lease and a replay of them is sent then.
        """
        drained = self.flush(timeout) if self._thread is not None else True
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
        return drained

    def alive(self) -> bool:
        """The sender thread runs and its dispatcher has not stopped on an internal error."""
        return self._thread is not None and self._thread.is_alive() and self._failure is None

    def stats(self) -> SenderStats:
        with self._cond:
            s = self._stats
            return SenderStats(s.submitted, s.sent, s.failed, s.duplicates, s.lost_claims, s.missing_claims,
                               s.store_outages, self._unfinished, s.store_down)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sender thread ---------------------------------------------------------------

    async def _main(self, ready: threading.Event, errors: list[BaseException]) -> None:
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._free = self.config.max_in_flight
        # Claim when an eighth of the slots is free, not at every freed slot: under load one
        # Redis round trip then claims several messages (profiled: claims of one or two per
        # round trip were a sixth of the sender's CPU); idle, every slot is free anyway.
        self._min_claim = max(1, min(self.config.claim_batch, self.config.max_in_flight // 8))
        self._tasks: set[asyncio.Task] = set()
        self._parked: list[_Item] = []
        self._marks = _Batcher(self, self._store.mark_sent_many)
        self._releases = _Batcher(self, self._store.release_many)
        try:
            await self._store.open()
            for channel in self._all_channels():
                await channel.start()
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            errors.append(exc)
            ready.set()
            return
        ready.set()
        dispatcher = asyncio.create_task(self._dispatch())
        await self._stop.wait()
        dispatcher.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(dispatcher, *self._tasks, return_exceptions=True)
        for channel in self._all_channels():
            await _quietly(channel.close())
        await _quietly(self._store.close())

    async def _dispatch(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                await self._claim(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: stop accepting work, wake waiters
            log.exception("sender %s: dispatcher stopped", self.config.name)
            with self._cond:
                self._failure = exc
                self._cond.notify_all()

    async def _next_batch(self) -> list[_Item]:
        """Up to `claim_batch` items, no more than free send slots (which it reserves)."""
        while True:
            while self._free < self._min_claim:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            now = time.perf_counter()
            due = [i for i in self._parked if i.not_before <= now]
            if due:
                self._parked = [i for i in self._parked if i.not_before > now]
            room = min(self.config.claim_batch, self._free)
            batch, rest = due[:room], due[room:]
            self._parked.extend(rest)
            with self._cond:
                while len(batch) < room and self._inbox:
                    batch.append(self._inbox.popleft())
                if not batch:
                    self._wake_scheduled = False
            if batch:
                self._free -= len(batch)
                return batch
            self._wake.clear()
            timeout = None
            if self._parked:
                timeout = max(0.0, min(i.not_before for i in self._parked) - now)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _claim(self, batch: list[_Item]) -> None:
        valid: list[_Item] = []
        for item in batch:
            if isinstance(item.message.get("message_id"), str) and item.message["message_id"]:
                valid.append(item)
            else:
                self._free_slot()
                self._fail(item, SendResult.failure("bad_message", "message_id missing", 0), "")
        claims = await self._with_store(self._store.claim_many,
                                        [(i.message["message_id"], i.token) for i in valid])
        for item, claim in zip(valid, claims):
            if claim.status in (CLAIMED, RECLAIMED):
                item.claim = claim.value
                task = asyncio.create_task(self._deliver(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            self._free_slot()
            if claim.status == SENT:
                self._finish(item, "skipped_duplicate", "already_sent", 0)
            else:
                assert claim.status == HELD, claim
                item.not_before = time.perf_counter() + self.config.held_poll_s
                self._parked.append(item)

    async def _deliver(self, item: _Item) -> None:
        message = item.message
        kind = message.get("channel")
        channel = self._channels.get(kind, self._default) if isinstance(kind, str) else self._default
        name = channel.name if channel is not None else ""
        if channel is None:
            result = SendResult.failure("no_channel", f"no channel for {kind!r}", 0)
        else:
            try:
                result = await channel.send(message)
            except Exception as exc:
                log.exception("sender %s: channel %s raised", self.config.name, name)
                result = SendResult.failure("internal_error", type(exc).__name__, 0)
        self._free_slot()
        key = (message["message_id"], item.claim)
        if result.ok:
            mark = await self._marks.put(key)
            if mark != MARK_KEPT:
                self._lost_claim(message["message_id"], mark)
            self._finish(item, "sent", "", result.attempts)
        else:
            await self._releases.put(key)
            self._fail(item, result, name)

    async def _with_store(self, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`call(*args)`, retried with backoff while the store is unavailable."""
        attempt = 0
        while True:
            try:
                result = await call(*args)
            except StoreUnavailable as exc:
                attempt += 1
                self._store_state(True, exc)
                cap = min(self.config.store_backoff_max_s, self.config.store_backoff_s * 2 ** min(attempt, 20))
                await asyncio.sleep(self._rng.uniform(cap / 2, cap))
                continue
            if attempt:
                self._store_state(False, None)
            return result

    def _lost_claim(self, message_id: str, mark: int) -> None:
        with self._cond:
            first = not (self._stats.lost_claims or self._stats.missing_claims)
            if mark == MARK_TAKEN:
                self._stats.lost_claims += 1
            else:
                self._stats.missing_claims += 1
        if mark == MARK_TAKEN:
            log.warning("sender %s: the claim on %s was taken over during the send (lease_s shorter than a "
                        "send?): it may have been sent twice", self.config.name, message_id)
        elif first:
            log.warning("sender %s: the idempotency key of %s had vanished when marking it sent: Redis lost "
                        "data (restart without persistence?); counted in stats().missing_claims",
                        self.config.name, message_id)

    def _store_state(self, down: bool, exc: BaseException | None) -> None:
        with self._cond:
            changed = self._stats.store_down != down
            self._stats.store_down = down
            if changed and down:
                self._stats.store_outages += 1
        if changed:
            if down:
                log.warning("sender %s: idempotency store unavailable, sending paused: %s", self.config.name, exc)
            else:
                log.warning("sender %s: idempotency store back, sending resumed", self.config.name)

    def _free_slot(self) -> None:
        self._free += 1
        if self._free >= self._min_claim:
            self._slot_freed.set()

    def _fail(self, item: _Item, result: SendResult, channel: str) -> None:
        self._call(self._dead_letter, dead_letter_record(item.message, result, channel))
        self._finish(item, "failed", result.reason, result.attempts, result.detail)

    def _finish(self, item: _Item, outcome: str, reason: str, attempts: int, detail: str = "") -> None:
        latency = (time.perf_counter() - item.submitted) * 1000
        self._call(self._on_result, decision_record(item.message, outcome, reason, latency_ms=latency,
                                                    attempts=attempts, detail=detail))
        with self._cond:
            self._unfinished -= 1
            if outcome == "sent":
                self._stats.sent += 1
            elif outcome == "failed":
                self._stats.failed += 1
            else:
                self._stats.duplicates += 1
            if self._waiting and (self._unfinished <= self._low_water or not self._unfinished):
                self._cond.notify_all()

    def _call(self, callback: Callable[[dict], None], record: dict) -> None:
        try:
            callback(record)
        except Exception:
            log.exception("sender %s: callback %r raised", self.config.name, callback)


class _Batcher:
    """Gathers single store calls made while one is running into the next pipeline."""

    def __init__(self, sender: Sender, call: Callable[[list], Awaitable[list | None]], limit: int = 512) -> None:
        self._sender = sender
        self._call = call
        self._limit = limit
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._running = False

    async def put(self, arg: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((arg, future))
        if not self._running:
            self._running = True
            task = asyncio.create_task(self._run())
            self._sender._tasks.add(task)
            task.add_done_callback(self._sender._tasks.discard)
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:self._limit], self._pending[self._limit:]
                results = await self._sender._with_store(self._call, [arg for arg, _ in batch])
                for n, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_result(results[n] if results is not None else None)
        finally:
            self._running = False


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed: its transports, timers and callbacks are C, and the
    sender's loop runs a few callbacks per message (profiled: about a third of the sender
    thread's time was asyncio's own Python code); else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency; kept optional for odd platforms
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("error while closing", exc_info=True)
