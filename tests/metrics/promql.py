"""Every PromQL expression espresso ships (dashboard panels and variables, alert rules), and
the metric names each one reads.

Not a PromQL parser: a lexer good enough to find metric names (strings, label matchers,
ranges and grouping clauses are removed; identifiers that are not functions, keywords or
numbers remain). The real Prometheus in test_prometheus.py parses them for real.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

__all__ = ["ROOT", "DASHBOARD", "RULES", "Expr", "dashboard_exprs", "rule_exprs", "all_exprs", "metric_names",
           "expand_grafana", "load_dashboard", "load_rules", "sample_names", "known_metric_names",
           "PROMETHEUS_SYNTHETIC"]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "espresso.json"
RULES = ROOT / "k8s" / "base" / "espresso-prometheusrule.yaml"

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
             "bool", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Expr:
    """One expression and where it comes from (for failure messages)."""

    where: str
    expr: str


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load_rules(path: Path = RULES) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _panels(panels: list) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_exprs(dash: Mapping[str, Any] | None = None) -> list[Expr]:
    """Every panel target's `expr` and the series selector of every `label_values` variable."""
    dash = load_dashboard() if dash is None else dash
    out = []
    for p in _panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(Expr(f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else str(q or "")
        m = _LABEL_VALUES.match(q)
        out.append(Expr(f"variable {v.get('name')!r}", m.group(1) if m else q))
    return out


def rule_exprs(rule: Mapping[str, Any] | None = None) -> list[Expr]:
    """The `expr` of every alerting and recording rule of a PrometheusRule object."""
    rule = load_rules() if rule is None else rule
    return [Expr(f"rule {r.get('alert') or r.get('record')!r}", r["expr"])
            for g in rule["spec"]["groups"] for r in g["rules"]]


def all_exprs() -> list[Expr]:
    return dashboard_exprs() + rule_exprs()


def _strip_braces(text: str, open_: str, close: str) -> str:
    out, depth = [], 0
    for ch in text:
        if ch == open_:
            depth += 1
        elif ch == close and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (functions, keywords, labels and numbers left out)."""
    text = _STRING.sub('""', expr)
    text = _strip_braces(text, "{", "}")
    text = _strip_braces(text, "[", "]")
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def expand_grafana(expr: str, rate_interval: str = "10s", variables: Mapping[str, str] | None = None,
                   time_range: str = "5m") -> str:
    """Replace Grafana's variables as Grafana would: `$__rate_interval`, `$__range` (the
    dashboard's time range) and the dashboard's own (`$namespace`, `$pod`, default `.*`
    which also matches a missing label)."""
    values = {"namespace": ".*", "pod": ".*", **(variables or {})}
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    expr = expr.replace("$__range", time_range).replace("${__range}", time_range)
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value)
        expr = re.sub(r"\$" + re.escape(name) + r"\b", value, expr)
    return expr


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}

#: Series Prometheus itself makes for every target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                        "scrape_samples_post_metric_relabeling"}


def sample_names(families: Mapping[str, str]) -> set[str]:
    """Series names of metric families given as name -> type (`x` counter -> `x_total`...)."""
    return {name + suffix for name, typ in families.items() for suffix in _SUFFIXES[typ]}


def known_metric_names() -> set[str]:
    """Every series name an espresso pod's `/metrics` can carry, and Prometheus' own."""
    from prometheus_client import CollectorRegistry, GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    from metrics.bytewax import BRIDGE_METRIC_NAMES, BYTEWAX_METRIC_NAMES
    from metrics.registry import EspressoMetrics

    reg = CollectorRegistry()
    EspressoMetrics(reg)
    families = {f.name: f.type for f in reg.collect()}
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # the default registry's
        families.update({f.name: f.type for f in collector.collect()})
    return (sample_names(families) | sample_names(BYTEWAX_METRIC_NAMES) | sample_names(BRIDGE_METRIC_NAMES)
            | PROMETHEUS_SYNTHETIC)
