"""Imports point one way: commands -> flows -> connectors -> metrics -> state.

`state/` is the engine-independent core (no stream engine, broker, store or metrics library);
each package may import only the packages below it, so a change in the wiring never reaches
into the core and the command line stays the only code that reads argv and the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["state", "metrics", "connectors", "flows", "commands"]  # bottom to top
OUTSIDE = {"state": {"bytewax", "confluent_kafka", "redis", "prometheus_client"}}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_package_imports_a_package_above_it():
    offenders = []
    for i, pkg in enumerate(LAYERS):
        above = set(LAYERS[i + 1:])
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in above:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name} ({pkg} is below {top})")
    assert offenders == []


def test_state_imports_no_engine_broker_or_store():
    """`state/` can be reused under another stream engine: it imports none of them."""
    offenders = [f"{p.relative_to(ROOT)}: {n}" for p in (ROOT / "state").rglob("*.py") for n in _imports(p)
                 if n.split(".")[0] in OUTSIDE["state"]]
    assert offenders == []


def test_only_commands_read_the_environment():
    """Settings come from commands/ (typed, checked once); below it configuration is passed in.
    Building a child process's environment from this one's is not reading a setting."""
    child_env = ("{**os.environ", "os.environ.items()", 'os.environ.get("PYTHONPATH")')
    offenders = []
    for pkg in LAYERS[:-1]:
        for path in (ROOT / pkg).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if ("os.environ" in line or "os.getenv" in line) and not any(c in line for c in child_env):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
