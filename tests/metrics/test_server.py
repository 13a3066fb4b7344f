"""metrics.server over real HTTP on loopback: endpoints, readiness, one server per port."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import REGISTRY, Gauge

from metrics.server import LIVEZ_PATH, METRICS_PATH, READYZ_PATH, Readiness, serve


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start():
    servers = []

    def run(**kwargs):
        kwargs.setdefault("bytewax_api", False)
        srv = serve(kwargs.pop("port", 0), host="127.0.0.1", **kwargs)
        servers.append(srv)
        return srv

    yield run
    for srv in servers:
        srv.close()


def test_metrics_serves_the_hooks_effects(start, registry, metrics):
    """/metrics shows what the hooks recorded, as Prometheus text."""
    srv = start(registry=registry)
    metrics.on_event("sms_click", 3)
    code, ctype, body = get(srv.url + METRICS_PATH)
    assert code == 200 and ctype.startswith("text/plain")
    assert 'espresso_events_consumed_total{type="sms_click"} 3.0' in body
    metrics.on_event("sms_click")
    assert 'espresso_events_consumed_total{type="sms_click"} 4.0' in get(srv.url + METRICS_PATH)[2]


def test_metrics_also_exposes_the_default_registry(start, registry, metrics):
    """Metrics others register in prometheus_client's default registry (Bytewax's Kafka lag
    gauge, the process collector) appear beside ours."""
    g = Gauge("test_default_registry_gauge", "test", registry=REGISTRY)
    try:
        g.set(42)
        body = get(start(registry=registry).url + METRICS_PATH)[2]
        assert "test_default_registry_gauge 42.0" in body
        assert "process_resident_memory_bytes" in body
        assert "espresso_build_info" in body
    finally:
        REGISTRY.unregister(g)


def test_openmetrics_when_asked(start, registry, metrics):
    """A scraper asking for OpenMetrics gets it (ends with # EOF)."""
    code, ctype, body = get(start(registry=registry).url + METRICS_PATH, accept="application/openmetrics-text")
    assert code == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_livez_answers_while_the_process_runs(start, registry):
    """/livez is 200 "ok" by default and 503 with the reason when `live` says so."""
    assert get(start(registry=registry).url + LIVEZ_PATH)[::2] == (200, "ok\n")
    stalled = start(registry=registry, live=lambda: (False, "no poll for 90s"))
    assert get(stalled.url + LIVEZ_PATH)[::2] == (503, "no poll for 90s\n")


def test_readyz_flips_with_readiness(start, registry):
    """/readyz is 503 with a reason until ready, then 200, and 503 again when it drops."""
    ready = Readiness("waiting for partitions")
    srv = start(registry=registry, ready=ready)
    assert get(srv.url + READYZ_PATH)[::2] == (503, "waiting for partitions\n")
    ready.set_ready()
    assert get(srv.url + READYZ_PATH)[::2] == (200, "ok\n")
    ready.set_not_ready("flow stopped")
    assert get(srv.url + READYZ_PATH)[::2] == (503, "flow stopped\n")


def test_readyz_accepts_bools_and_survives_a_failing_check(start, registry):
    """ready() may return a bool; if it raises, the probe answers 503 and says why."""
    flag = {"ok": False}
    srv = start(registry=registry, ready=lambda: flag["ok"])
    assert get(srv.url + READYZ_PATH)[::2] == (503, "not ready\n")
    flag["ok"] = True
    assert get(srv.url + READYZ_PATH)[0] == 200
    broken = start(registry=registry, ready=lambda: 1 / 0)
    code, _, body = get(broken.url + READYZ_PATH)
    assert code == 503 and body.startswith("check failed: ZeroDivisionError")


def test_unknown_path_is_404(start, registry):
    """Anything but the three paths is 404, naming the paths served."""
    code, _, body = get(start(registry=registry).url + "/")
    assert code == 404 and METRICS_PATH in body


def test_serve_again_on_a_served_port_returns_the_running_server(start, registry):
    """Several worker threads calling serve(port) share one server."""
    port = free_port()
    got = []
    threads = [threading.Thread(target=lambda: got.append(start(port=port, registry=registry))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in got}) == 1 and got[0].port == port
    assert get(got[0].url + LIVEZ_PATH)[0] == 200


def test_closed_server_frees_its_port(registry):
    """close() stops serving; the port can be served again."""
    port = free_port()
    srv = serve(port, host="127.0.0.1", registry=registry, bytewax_api=False)
    srv.close()
    again = serve(port, host="127.0.0.1", registry=registry, bytewax_api=False)
    try:
        assert again is not srv and get(again.url + LIVEZ_PATH)[0] == 200
    finally:
        again.close()


def test_port_in_use_raises(registry):
    """A port another process holds is an OSError for the caller to report."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            serve(s.getsockname()[1], host="127.0.0.1", registry=registry, bytewax_api=False)


BYTEWAX_TEXT = """\
# HELP bytewax_item_out_count_total number of items this step has emitted
# TYPE bytewax_item_out_count_total counter
bytewax_item_out_count_total{step_id="espresso.segments",worker_index="0",otel_scope_name="bytewax"} 17
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_name="unknown_service"} 1
# HELP espresso_build_info Always 1
# TYPE espresso_build_info gauge
espresso_build_info{version="from-bytewax-copy"} 1.0
"""


@pytest.fixture
def fake_bytewax_api():
    """A loopback stand-in for Bytewax's Dataflow API /metrics (Rust + Python metrics)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = BYTEWAX_TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/metrics"
    srv.shutdown()
    srv.server_close()


def test_bytewax_rust_metrics_join_ours(start, registry, metrics, fake_bytewax_api):
    """With the Dataflow API on, /metrics carries Bytewax's bytewax_* families once, and
    nothing else from it (its copy of the Python registry is skipped)."""
    body = get(start(registry=registry, bytewax_api=fake_bytewax_api).url + METRICS_PATH)[2]
    assert 'bytewax_item_out_count_total{otel_scope_name="bytewax",step_id="espresso.segments",' \
           'worker_index="0"} 17.0' in body
    assert "espresso_bytewax_api_up 1.0" in body
    assert "target_info" not in body and "from-bytewax-copy" not in body
    assert body.count("# TYPE espresso_build_info gauge") == 1


def test_bytewax_api_down_is_reported_not_fatal(start, registry, metrics):
    """If Bytewax's API does not answer, /metrics still works and says so."""
    code, _, body = get(start(registry=registry, bytewax_api=f"http://127.0.0.1:{free_port()}/metrics").url
                        + METRICS_PATH)
    assert code == 200 and "espresso_bytewax_api_up 0.0" in body and "espresso_build_info" in body
