"""Dashboard and alert queries read only metrics that espresso or Bytewax define."""

from __future__ import annotations

import pytest

from .promql import (all_exprs, dashboard_exprs, expand_grafana, known_metric_names, load_dashboard,
                     metric_names, rule_exprs)

EXPRS = all_exprs()


def test_extractor_finds_names_and_skips_the_rest():
    """The lexer keeps metric names and drops functions, labels, ranges and keywords."""
    expr = ('histogram_quantile(0.99, sum by (le, step_id) (rate(a_bucket{pod=~"$pod", x="b_total"}[5m])))'
            ' / on (pod) group_left b_total offset 5m > bool 1e3 and c:rec')
    assert metric_names(expr) == {"a_bucket", "b_total", "c:rec"}


def test_there_are_expressions_in_both_sources():
    """The dashboard and the rules each contribute expressions."""
    assert len(dashboard_exprs()) >= 15 and len(rule_exprs()) >= 6


@pytest.mark.parametrize("e", EXPRS, ids=[e.where for e in EXPRS])
def test_expression_reads_only_defined_metrics(e):
    """Each expression names at least one metric, all defined by EspressoMetrics or Bytewax."""
    names = metric_names(e.expr)
    assert names, f"{e.where}: no metric in {e.expr!r}"
    unknown = names - known_metric_names()
    assert not unknown, f"{e.where}: {sorted(unknown)} are defined by neither espresso nor Bytewax"


def test_grafana_variables_are_expanded():
    """$__rate_interval and the dashboard variables become plain PromQL."""
    out = expand_grafana('rate(x{namespace=~"$namespace", pod=~"${pod}"}[$__rate_interval])', "30s")
    assert out == 'rate(x{namespace=~".*", pod=~".*"}[30s])'
    assert expand_grafana("increase(x[$__range]) / increase(y[${__range}])", time_range="1h") == \
        "increase(x[1h]) / increase(y[1h])"


def test_dashboard_has_a_prometheus_datasource_variable_used_everywhere():
    """A `datasource` variable of type prometheus, and every panel and target uses it."""
    dash = load_dashboard()
    var = next(v for v in dash["templating"]["list"] if v["name"] == "datasource")
    assert (var["type"], var["query"]) == ("datasource", "prometheus")
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_dashboard_covers_every_subject():
    """Throughput, both latency histograms, segment sizes and changes, dead letters and late,
    message outcomes, Kafka lag, state size, watermark delay and the campaign results
    (released, held out, delivered, opened, clicked, converted, revenue, ignored touches) all
    have a panel."""
    used = set().union(*(metric_names(e.expr) for e in dashboard_exprs()))
    for name in ("espresso_events_consumed_total", "espresso_change_event_time_lag_seconds_bucket",
                 "espresso_change_ingest_latency_seconds_bucket", "espresso_segment_members",
                 "espresso_segment_changes_total", "espresso_events_invalid_total", "espresso_events_late_total",
                 "espresso_messages_total", "espresso_kafka_consumer_lag", "espresso_contacts",
                 "espresso_timers_pending", "espresso_watermark_delay_seconds",
                 "espresso_campaign_released_total", "espresso_campaign_held_out_total",
                 "espresso_campaign_delivered_total", "espresso_campaign_opened_total",
                 "espresso_campaign_clicked_total", "espresso_conversions_total", "espresso_conversion_revenue_total",
                 "espresso_touches_ignored_total"):
        assert name in used, name
    quantiles = {e.expr.split(",")[0] for e in dashboard_exprs() if "event_time_lag" in e.expr}
    assert quantiles == {"histogram_quantile(0.5", "histogram_quantile(0.99"}


def test_dashboard_panels_do_not_overlap():
    """Panels sit on the 24-column grid without overlapping, and ids are unique."""
    dash = load_dashboard()
    cells, ids = set(), set()
    for p in dash["panels"]:
        assert p["id"] not in ids
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
