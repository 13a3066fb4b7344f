"""A real Prometheus scrapes the real flow (`espresso run` with campaigns, `espresso deliver`,
live traffic on the test broker): every dashboard query returns data and every alert rule
loads and evaluates."""

from __future__ import annotations

import math
import subprocess
import time
import urllib.request

import pytest

from .prometheus import Prometheus
from .real_flow import RealFlow
from .promql import dashboard_exprs, expand_grafana, load_rules, rule_exprs

pytestmark = pytest.mark.integration

RATE_INTERVAL = "10s"  # Grafana's $__rate_interval: >= 4 scrapes at the test's 1 s interval
DASHBOARD = dashboard_exprs()
RULES = rule_exprs()


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake flow exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout_s}s")


@pytest.fixture(scope="module")
def webhook():
    """A local delivery provider that accepts every message."""
    from tests.connectors.http_server import WebhookServer

    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flow(tmp_path_factory, kafka_bootstrap, redis_server, webhook):
    """`espresso run` with the built-in campaigns and `espresso deliver`, fed live traffic,
    and Prometheus scraping both every second with espresso's alert rules loaded, started
    first: it sees every counter from zero (holdouts are decided in the first seconds only)."""
    f = RealFlow(tmp_path_factory.mktemp("real-flow"), kafka_bootstrap, redis_server.url, webhook.url)
    with Prometheus.start(f.targets, rule_groups=load_rules()["spec"]["groups"]) as p:
        f.scraped = lambda: bool(p.query("espresso_campaign_held_out_total"))
        with f:
            f.prometheus = p
            yield f


@pytest.fixture(scope="module")
def prom(flow):
    """The Prometheus of `flow`, after enough scrapes for rates over RATE_INTERVAL, a message
    sent, a time-driven exit, and conversions of messages and of a holdout."""
    p = flow.prometheus
    p.wait_target_up(timeout_s=60)
    ready = (f"count_over_time(espresso_build_info[{RATE_INTERVAL}]) >= 4",
             f"count_over_time(bytewax_item_out_count_total[{RATE_INTERVAL}]) >= 3",
             "espresso_send_duration_seconds_count > 0",
             'espresso_segment_changes_total{direction="exit"} > 0',
             "espresso_events_late_total > 0",
             # the Campaigns row: deliveries, touches and conversions of both groups
             "espresso_campaign_delivered_total > 0", "espresso_campaign_opened_total > 0",
             "espresso_campaign_clicked_total > 0", 'espresso_touches_ignored_total{reason="machine"} > 0',
             'espresso_conversions_total{group="message"} > 0', 'espresso_conversions_total{group="holdout"} > 0')
    deadline = time.monotonic() + 60
    while not all(p.query(q) for q in ready):
        if time.monotonic() > deadline:
            missing = [q for q in ready if not p.query(q)]
            pytest.fail(f"not ready after 60 s: {missing}\nrun: {flow.log('run')}\ndeliver: {flow.log('deliver')}")
        time.sleep(0.5)
    time.sleep(4)  # a few more scrapes so every rate has two points with traffic
    yield p


def _finite(result: list[dict]) -> list[float]:
    values = [float(r["value"][1]) for r in result]
    return [v for v in values if not math.isnan(v) and not math.isinf(v)]


@pytest.mark.parametrize("e", DASHBOARD, ids=[e.where for e in DASHBOARD])
def test_dashboard_query_returns_data(prom, e):
    """The panel's query (Grafana variables expanded) parses and returns a finite value."""
    result = prom.query(expand_grafana(e.expr, RATE_INTERVAL))
    assert _finite(result), f"{e.where}: no data for {e.expr!r}: {result}"


@pytest.mark.parametrize("e", RULES, ids=[e.where for e in RULES])
def test_alert_expression_evaluates(prom, e):
    """The alert's expression evaluates without error (firing or not)."""
    prom.query(e.expr)


def test_rules_load_and_evaluate_healthy(prom):
    """Prometheus loads the PrometheusRule's groups and evaluates every rule with no error."""
    deadline = time.monotonic() + 10
    while True:
        rules = prom.rules()
        if len(rules) == len(RULES) and all(r["health"] == "ok" for r in rules):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"rules not healthy: {[(r['name'], r['health'], r.get('lastError')) for r in rules]}")
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {e.where.split("'")[1] for e in RULES}


def test_bytewax_metrics_come_through_our_port(prom):
    """Bytewax's Rust-side metrics are scraped from espresso's one metrics port."""
    assert [float(r["value"][1]) for r in prom.query("espresso_bytewax_api_up")] == [1.0]
    steps = {r["metric"]["step_id"] for r in prom.query("bytewax_item_out_count_total")}
    assert any(s.startswith("espresso.segments") for s in steps), steps
