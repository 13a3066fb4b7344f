"""Liveness, readiness and the metric hooks of the live flow, once per process.

- live (`/livez`): the dataflow's worker loop is turning: a source partition polled Kafka
  within the last `stall_s` seconds (or the flow is still starting).
- ready (`/readyz`): the source was listed, every Kafka partition this process reads was
  assigned and polled once (so its state was restored from the recovery store before,
  Bytewax restores before it reads), and no partition is waiting for its first poll.

The HTTP server is `metrics.server.serve` when the metrics package provides it, else a
small built-in one that serves `/metrics` (Prometheus text from the default registry),
`/livez` and `/readyz`. Metric hooks forward to `metrics.registry` when it has them and
are no-ops otherwise, so the flow never depends on metrics being present.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["Health", "HEALTH", "serve", "set_consumer_lag", "count_source_error",
           "count_delivery_failure", "count_changes", "count_dead_letters"]

log = logging.getLogger(__name__)


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


# -- metric hooks (forwarded to metrics.registry when it has them) ------------
def _hook(name: str) -> Callable[..., Any] | None:
    try:
        from metrics import registry  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - metrics are optional
        return None
    return getattr(registry, name, None)


_hooks: dict[str, Callable[..., Any] | None] = {}


def _call(name: str, *args: Any) -> None:
    fn = _hooks.get(name, _hooks)
    if fn is _hooks:
        fn = _hooks[name] = _hook(name)
    if fn is not None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a metric must never break the flow
            log.debug("metric hook %s failed", name, exc_info=True)


def set_consumer_lag(topic: str, partition: int, lag: int) -> None:
    _call("set_consumer_lag", topic, partition, lag)


def count_source_error(topic: str, partition: int, code: str) -> None:
    _call("count_source_error", topic, partition, code)


def count_delivery_failure(topic: str, code: str) -> None:
    _call("count_delivery_failure", topic, code)


def count_changes(topic: str, changes: list) -> None:
    _call("count_changes_produced", topic, changes)


def count_dead_letters(topic: str, dead: list) -> None:
    _call("count_dead_letters_produced", topic, dead)


# -- HTTP ----------------------------------------------------------------------
_server_lock = threading.Lock()
_server: Any = None


def serve(port: int, host: str = "0.0.0.0", health: Health = HEALTH) -> Any:
    """Start the metrics/health HTTP server once per process (later calls return it)."""
    global _server
    with _server_lock:
        if _server is not None:
            return _server
        try:
            from metrics import server as metrics_server  # type: ignore[attr-defined]
            fn = getattr(metrics_server, "serve", None)
        except Exception:  # noqa: BLE001
            fn = None
        if fn is not None:
            try:  # create the process's metrics so every family shows from the start
                from metrics.registry import get_metrics  # type: ignore[attr-defined]
                get_metrics()
            except Exception:  # noqa: BLE001
                log.debug("metrics registry unavailable", exc_info=True)
            _server = fn(port, host, ready=health.ready, live=health.live)
        else:
            _server = _builtin_server(port, host, health)
        return _server


def _builtin_server(port: int, host: str, health: Health) -> ThreadingHTTPServer:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
            elif path in ("/livez", "/readyz"):
                ok, why = (health.live if path == "/livez" else health.ready)()
                body, ctype, code = (why + "\n").encode(), "text/plain; charset=utf-8", 200 if ok else 503
            else:
                body, ctype, code = b"not found: try /metrics, /livez, /readyz\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            return

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="espresso-http", daemon=True).start()
    log.info("serving /metrics /livez /readyz on %s:%d", host, srv.server_address[1])
    return srv
