"""Bytewax's own metrics, and how `metrics.server.serve` exposes them beside ours.

What Bytewax 0.21 exports (read from its source, `src/metrics/mod.rs`, `src/inputs.rs`,
`src/operators.rs`, `src/outputs.rs`, `src/timely.rs`, `src/webserver/mod.rs` and
`pysrc/bytewax/connectors/kafka/__init__.py`):

- Python side, in `prometheus_client.REGISTRY`: only `bytewax_kafka_consumer_lag{step_id,
  topic, partition}`, and only when Bytewax's own `KafkaSource` is used (espresso has its
  own source, which sets `espresso_kafka_consumer_lag`). `bytewax._metrics` merely renders
  that default registry.
- Rust side (OpenTelemetry -> the Rust `prometheus` crate's default registry, namespace
  `bytewax`, labels `step_id` and `worker_index`): per-step counters `item_inp_count` and
  `item_out_count` (exposed with `_total`) and histograms of operator timings. They exist
  only when the flow runs through `cli_main` with `BYTEWAX_DATAFLOW_API_ENABLED` set, and
  are served only by Bytewax's "Dataflow API" web server (`BYTEWAX_DATAFLOW_API_PORT`,
  default 3030, `/metrics` = Rust metrics + the Python default registry, `/dataflow`).

So one port serves everything: `serve` exposes the default registry itself and, when the
Dataflow API is enabled, `BytewaxApiCollector` reads Bytewax's loopback `/metrics` at scrape
time and re-exposes its `bytewax_*` families (the Python ones it repeats are skipped).
"""

from __future__ import annotations

import logging
import urllib.request
from typing import Iterable, Mapping

from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["BYTEWAX_METRIC_NAMES", "BRIDGE_METRIC_NAMES", "BytewaxApiCollector", "api_url_from_env", "API_ENABLED_ENV", "API_PORT_ENV",
           "API_CACHE_PATH_ENV", "DEFAULT_API_PORT"]

log = logging.getLogger(__name__)

API_ENABLED_ENV = "BYTEWAX_DATAFLOW_API_ENABLED"
API_PORT_ENV = "BYTEWAX_DATAFLOW_API_PORT"
API_CACHE_PATH_ENV = "BYTEWAX_DATAFLOW_API_CACHE_PATH"  # where it writes dataflow.json (default: cwd)
DEFAULT_API_PORT = 3030

#: Metric families Bytewax 0.21.1 can expose: name (without sample suffixes) -> type.
BYTEWAX_METRIC_NAMES: dict[str, str] = {
    # Python side (bytewax.connectors.kafka, only with Bytewax's KafkaSource)
    "bytewax_kafka_consumer_lag": "gauge",
    # Rust side, labels step_id, worker_index
    "bytewax_item_inp_count": "counter",
    "bytewax_item_out_count": "counter",
    "bytewax_inp_part_next_batch_duration_seconds": "histogram",
    "bytewax_inp_part_next_batch_size": "histogram",
    "bytewax_snapshot_duration_seconds": "histogram",
    "bytewax_flat_map_batch_duration_seconds": "histogram",
    "bytewax_stateful_batch_on_batch_duration_seconds": "histogram",
    "bytewax_stateful_batch_on_notify_duration_seconds": "histogram",
    "bytewax_stateful_batch_on_eof_duration_seconds": "histogram",
    "bytewax_stateful_batch_notify_at_duration_seconds": "histogram",
    "bytewax_out_part_write_batch_duration_seconds": "histogram",
    # Rust side, recovery store, labels worker_id, part_id (and name)
    "bytewax_partd_write_duration_seconds": "histogram",
    "bytewax_partd_load_builder_duration_seconds": "histogram",
}

#: Families the bridge itself adds.
BRIDGE_METRIC_NAMES: dict[str, str] = {"espresso_bytewax_api_up": "gauge"}


def api_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Loopback URL of Bytewax's `/metrics` when its Dataflow API is enabled, else None."""
    env = {} if environ is None else environ  # the caller (commands/) reads the environment
    if env.get(API_ENABLED_ENV) is None:  # Bytewax checks presence, not value
        return None
    port = env.get(API_PORT_ENV) or str(DEFAULT_API_PORT)
    return f"http://127.0.0.1:{int(port)}/metrics"


class BytewaxApiCollector:
    """Re-exposes the `bytewax_*` families of Bytewax's Dataflow API `/metrics`.

    Read at each scrape with a short timeout; `espresso_bytewax_api_up` tells whether it
    answered (0 before the dataflow starts or if the API server died).
    """

    def __init__(self, url: str, timeout_s: float = 2.0, prefix: str = "bytewax_") -> None:
        self.url, self.timeout_s, self.prefix = url, timeout_s, prefix

    def _fetch(self) -> str:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:  # noqa: S310 - loopback URL
            return resp.read().decode("utf-8", "replace")

    def collect(self) -> Iterable:
        up = GaugeMetricFamily("espresso_bytewax_api_up",
                               "1 if Bytewax's Dataflow API /metrics answered this scrape, else 0.")
        try:
            families = [f for f in text_string_to_metric_families(self._fetch()) if f.name.startswith(self.prefix)]
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Bytewax's did
            log.debug("bytewax metrics at %s: %s", self.url, exc)
            families = []
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        yield up
        yield from families
