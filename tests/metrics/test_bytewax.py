"""What Bytewax exports, and when espresso's server reads it."""

from __future__ import annotations

import re
from pathlib import Path

import bytewax

from metrics.bytewax import BYTEWAX_METRIC_NAMES, DEFAULT_API_PORT, api_url_from_env

BYTEWAX_DIR = Path(list(bytewax.__path__)[0])  # a namespace package: no __file__


def test_api_url_follows_bytewax_environment():
    """Bytewax starts its API when BYTEWAX_DATAFLOW_API_ENABLED is set (any value) on
    BYTEWAX_DATAFLOW_API_PORT (default 3030); we read it on loopback."""
    assert api_url_from_env({}) is None
    assert api_url_from_env({"BYTEWAX_DATAFLOW_API_ENABLED": "true"}) == \
        f"http://127.0.0.1:{DEFAULT_API_PORT}/metrics"
    assert api_url_from_env({"BYTEWAX_DATAFLOW_API_ENABLED": "", "BYTEWAX_DATAFLOW_API_PORT": "3131"}) == \
        "http://127.0.0.1:3131/metrics"


def test_python_side_names_match_the_installed_bytewax():
    """The Python-side metric Bytewax registers (Kafka lag) is spelled as we list it."""
    src = (BYTEWAX_DIR / "connectors" / "kafka" / "__init__.py").read_text()
    python_side = set(re.findall(r'Gauge\(\s*"([a-z_]+)"', src))
    assert python_side == {n for n in BYTEWAX_METRIC_NAMES if n == "bytewax_kafka_consumer_lag"}


def test_rust_side_names_are_in_the_installed_extension():
    """Every Rust-side instrument we list is named in the installed _bytewax extension."""
    so = next(BYTEWAX_DIR.glob("_bytewax*.so")).read_bytes()
    for name in BYTEWAX_METRIC_NAMES:
        if name != "bytewax_kafka_consumer_lag":
            assert name.removeprefix("bytewax_").encode() in so, name
