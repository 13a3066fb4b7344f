"""The engine-independent core stays independent: no stream engine, broker or store in state/."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"bytewax", "confluent_kafka", "redis", "prometheus_client", "flows", "connectors", "metrics"}


def test_state_imports_no_engine_broker_or_store():
    """`state/` can be reused under another stream engine: it imports none of them."""
    root = Path(__file__).resolve().parents[1] / "state"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
