"""One small HTTP server per process: `/metrics`, `/livez`, `/readyz` on one port.

    GET /metrics  Prometheus text (OpenMetrics if asked): `registry` + the default registry
                  (Bytewax's Python-side metrics) + Bytewax's Rust-side metrics when its
                  Dataflow API is enabled (see metrics/bytewax.py)
    GET /livez    200 "ok" while the process runs and `live()` holds, else 503 and why
    GET /readyz   200 when `ready()` holds, else 503 and a short reason

`live` and `ready` return a bool, or `(bool, reason)`. The server runs in daemon threads;
`serve` called again for a port already served (say by another Bytewax worker thread)
returns the running server, so every worker may call it.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from .bytewax import BytewaxApiCollector

__all__ = ["serve", "MetricsServer", "Readiness", "DEFAULT_PORT", "PORT_NAME", "METRICS_PATH", "LIVEZ_PATH",
           "READYZ_PATH"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464
PORT_NAME = "metrics"  # the container/Service port name the Kubernetes manifests use
METRICS_PATH = "/metrics"
LIVEZ_PATH = "/livez"
READYZ_PATH = "/readyz"

Probe = Callable[[], Any]


class Readiness:
    """A thread-safe readiness flag to pass as `ready=`: not ready (with a reason) until set."""

    def __init__(self, reason: str = "starting") -> None:
        self._state = (False, reason)

    def set_ready(self, reason: str = "ok") -> None:
        self._state = (True, reason)

    def set_not_ready(self, reason: str) -> None:
        self._state = (False, reason)

    def __call__(self) -> tuple[bool, str]:
        return self._state


def _probe(fn: Probe) -> tuple[bool, str]:
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - a failing check means "not ok", never a crash
        return False, f"check failed: {type(exc).__name__}: {exc}"[:200]
    if isinstance(res, tuple):
        ok, why = bool(res[0]), str(res[1]) if len(res) > 1 else ""
    else:
        ok, why = bool(res), ""
    return ok, why or ("ok" if ok else "not ready")


class _Union:
    """Collects several collectors as one; a family name seen first wins (no duplicates)."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self):
        seen: set[str] = set()
        for src in self.sources:
            for fam in src.collect():
                if fam.name not in seen:
                    seen.add(fam.name)
                    yield fam


class _Handler(BaseHTTPRequestHandler):
    server: "MetricsServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path == METRICS_PATH:
            try:
                encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                code, body = 200, encoder(srv.exposed)
            except Exception as exc:  # noqa: BLE001
                log.exception("metrics exposition failed")
                code, ctype, body = 500, "text/plain; charset=utf-8", f"exposition failed: {exc}\n".encode()
        elif path in (LIVEZ_PATH, READYZ_PATH):
            ok, why = _probe(srv.live if path == LIVEZ_PATH else srv.ready)
            code, ctype, body = (200 if ok else 503), "text/plain; charset=utf-8", (why + "\n").encode()
        else:
            code, ctype = 404, "text/plain; charset=utf-8"
            body = f"not found: {METRICS_PATH}, {LIVEZ_PATH}, {READYZ_PATH}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return  # probes every few seconds would flood the log


class MetricsServer(ThreadingHTTPServer):
    """The running server: `port` (the bound one, useful with port 0), `url`, `close()`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, exposed: Any, ready: Probe, live: Probe) -> None:
        super().__init__((host, port), _Handler)
        self.exposed, self.ready, self.live = exposed, ready, live
        self.host = host
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, args=(0.1,), name=f"espresso-metrics-{self.port}",
                                        daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        with _lock:
            if _servers.get((self.host, self.port)) is self:
                del _servers[(self.host, self.port)]
        self.shutdown()
        self.server_close()


_lock = threading.Lock()
_servers: dict[tuple[str, int], MetricsServer] = {}


def serve(port: int = DEFAULT_PORT, host: str = "0.0.0.0", ready: Probe = lambda: True,
          registry: Any = REGISTRY, *, live: Probe = lambda: True, bytewax_api: str | None | bool = None
          ) -> MetricsServer:
    """Serve `/metrics`, `/livez` and `/readyz` on `host:port` in background threads.

    `registry`: the collector registry of our metrics (`get_metrics()` uses the default one);
    the default registry is exposed too. `bytewax_api`: URL of Bytewax's Dataflow API
    `/metrics` to include (commands/ derive it from `BYTEWAX_DATAFLOW_API_ENABLED`), None for none.
    Port 0 picks a free port (`server.port`). A second call for a served host and port
    returns the running server; an `OSError` (port in use) propagates.
    """
    with _lock:
        running = _servers.get((host, port)) if port else None
        if running is not None:
            return running
        if registry is REGISTRY:  # the process's metrics: every family shows from the start
            from .registry import get_metrics

            get_metrics()
        sources = [registry] if registry is REGISTRY else [registry, REGISTRY]
        url = bytewax_api or None
        if url:
            sources.append(BytewaxApiCollector(str(url)))
        srv = MetricsServer(host, port, _Union(sources), ready, live).start()
        _servers[(host, srv.port)] = srv
    log.info("serving %s %s %s on %s:%d%s", METRICS_PATH, LIVEZ_PATH, READYZ_PATH, host, srv.port,
             f" (with Bytewax metrics from {url})" if url else "")
    return srv
