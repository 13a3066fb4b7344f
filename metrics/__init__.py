"""espresso metrics: one registry of metrics recorded through hooks, served with health probes.

- `metrics.registry`: `EspressoMetrics` (every metric, defined once) and `get_metrics()`.
- `metrics.server`: `serve(port)` for `/metrics`, `/livez`, `/readyz` on one port.
- `metrics.labels`: the bounded label vocabularies.
- `metrics.bytewax`: what Bytewax exports and how it joins our `/metrics`.
"""

from .registry import EspressoMetrics, get_metrics
from .server import Readiness, serve

__all__ = ["EspressoMetrics", "get_metrics", "serve", "Readiness"]
