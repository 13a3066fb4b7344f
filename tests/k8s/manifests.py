"""The Kubernetes manifests as Python objects: the base files, and kustomize's rendering of
the root and the example overlay (with `kubectl kustomize`, when kubectl is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

import yaml

__all__ = ["ROOT", "K8S", "BASE", "OVERLAY", "OPERATIONS", "load_docs", "base_files", "base_objects", "render",
           "one", "containers", "env_of", "matches", "anchors"]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
OPERATIONS = ROOT / "docs" / "operations.md"


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def base_files() -> list[Path]:
    return sorted(BASE.glob("espresso-*.yaml"))


def base_objects() -> list[dict]:
    return [d for f in base_files() for d in load_docs(f)]


def render(directory: Path) -> list[dict] | None:
    """`kubectl kustomize DIR` parsed, or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def one(objects: Iterable[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def containers(sts: dict) -> list[dict]:
    """Init containers and containers of a StatefulSet's pod template."""
    spec = sts["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def env_of(container: dict) -> dict[str, dict]:
    """name -> env entry (with `value` or `valueFrom`)."""
    return {e["name"]: e for e in container.get("env", [])}


def matches(selector: dict, labels: dict) -> bool:
    """A label selector's matchLabels (or a plain map) all hold in `labels`."""
    wanted = selector.get("matchLabels", selector) if "matchExpressions" not in selector else selector["matchLabels"]
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out
