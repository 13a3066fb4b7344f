"""Liveness and readiness of a live process (the flow, the sender), once per process.

- live (`/livez`): the dataflow's worker loop is turning: a source partition polled Kafka
  within the last `stall_s` seconds (or the flow is still starting).
- ready (`/readyz`): the source was listed, every Kafka partition this process reads was
  assigned and polled once (so its state was restored from the recovery store before,
  Bytewax restores before it reads), and no partition is waiting for its first poll.

`metrics.server.serve(port, ready=HEALTH.ready, live=HEALTH.live)` serves them with /metrics.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["DELIVER_HEALTH", "DeliverHealth", "HEALTH", "Health"]


class Health:
    """Process-wide state of the flow, updated by the sources (thread-safe)."""

    def __init__(self, stall_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s, self.clock = stall_s, clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.started = self.clock()
            self.listed = False
            self.pending: set[tuple[str, int]] = set()
            self.polled: set[tuple[str, int]] = set()
            self.last_beat: float | None = None
            self.stopped = False
            self.stopping = False

    # -- updates from the flow ---------------------------------------------
    def source_listed(self) -> None:
        with self._lock:
            self.listed = True

    def partition_built(self, topic: str, partition: int) -> None:
        with self._lock:
            self.pending.add((topic, partition))

    def partition_polled(self, topic: str, partition: int) -> None:
        with self._lock:
            self.pending.discard((topic, partition))
            self.polled.add((topic, partition))

    def beat(self) -> None:
        self.last_beat = self.clock()

    def request_stop(self) -> None:
        """Graceful stop: every source partition ends at its next poll, sinks flush and close."""
        self.stopping = True

    def stop(self) -> None:
        self.stopped = True

    # -- probes ------------------------------------------------------------
    def live(self) -> tuple[bool, str]:
        now = self.clock()
        if self.stopped:
            return False, "flow stopped"
        last = self.last_beat
        if last is None:
            if now - self.started > max(self.stall_s, 300.0):
                return False, f"no partition polled since start {now - self.started:.0f}s ago"
            return True, "starting"
        if now - last > self.stall_s:
            return False, f"no poll for {now - last:.0f}s (worker loop stalled)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            if self.stopped or self.stopping:
                return False, "flow stopping" if not self.stopped else "flow stopped"
            if not self.listed:
                return False, "dataflow starting"
            if self.pending:
                waiting = ", ".join(f"{t}[{p}]" for t, p in sorted(self.pending))
                return False, f"waiting for first poll of {waiting}"
            if not self.polled and self.clock() - self.started < 10.0:
                return False, "waiting for partitions"
            return True, f"ok: {len(self.polled)} partitions"


HEALTH = Health()


class DeliverHealth:
    """Liveness and readiness of `espresso deliver` (its own, as it runs no dataflow).

    - live: the consume loop turns (it beats at every poll and while it waits for the sender
      to finish a batch) and the sender thread runs. A provider or Redis that is slow or down
      keeps it live: a restart would not help, and the sender resumes by itself.
    - ready: the consumer joined its group (an assignment, even empty with more processes
      than partitions, was received), Redis answers, and no stop was requested.
    """

    def __init__(self, stall_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s, self.clock = stall_s, clock
        self.reset()

    def reset(self, store_down: Callable[[], bool] = lambda: False,
              sender_alive: Callable[[], bool] = lambda: True) -> None:
        self.started = self.clock()
        self.last_beat: float | None = None
        self.joined = False
        self.stopping = False
        self._store_down, self._sender_alive = store_down, sender_alive

    def beat(self) -> None:
        self.last_beat = self.clock()

    def live(self) -> tuple[bool, str]:
        if not self._sender_alive():
            return False, "sender stopped"
        since = self.clock() - (self.last_beat if self.last_beat is not None else self.started)
        if since > self.stall_s:
            return False, f"consume loop stalled for {since:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping"
        if not self.joined:
            return False, "joining the consumer group"
        if self._store_down():
            return False, "Redis unreachable: sending paused"
        return True, "ok"


DELIVER_HEALTH = DeliverHealth()
