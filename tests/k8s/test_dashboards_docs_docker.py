"""The dashboard ConfigMap, the runbook links, and the Dockerfile agree with their sources."""

from __future__ import annotations

import json
import re
import sys
import tomllib

from metrics.server import DEFAULT_PORT

from .manifests import BASE, OPERATIONS, ROOT, anchors, load_docs, one

sys.path.insert(0, str(ROOT / "dashboards"))
import sync_configmap  # noqa: E402


def test_dashboard_configmap_is_generated_from_the_dashboard():
    """k8s/base/espresso-dashboard-configmap.yaml is exactly what sync_configmap renders
    from dashboards/espresso.json (run `python dashboards/sync_configmap.py` after editing)."""
    assert sync_configmap.TARGET.read_text(encoding="utf-8") == sync_configmap.render()
    cm = load_docs(BASE / "espresso-dashboard-configmap.yaml")[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["espresso.json"]) == json.loads((ROOT / "dashboards" / "espresso.json").read_text())


def test_every_runbook_url_points_at_a_section_of_operations_md():
    """Each alert's runbook_url is docs/operations.md#<anchor> and that heading exists."""
    rule = load_docs(BASE / "espresso-prometheusrule.yaml")[0]
    doc_anchors = anchors(OPERATIONS.read_text(encoding="utf-8"))
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            path, _, anchor = r["annotations"]["runbook_url"].partition("#")
            assert path.endswith("docs/operations.md"), r["alert"]
            assert anchor == r["alert"].lower() and anchor in doc_anchors, r["alert"]


def test_runbook_sections_say_what_to_do():
    """Each alert's section gives its meaning, likely causes, what to check and what to do."""
    doc = OPERATIONS.read_text(encoding="utf-8")
    for r in load_docs(BASE / "espresso-prometheusrule.yaml")[0]["spec"]["groups"][0]["rules"]:
        section = doc.split(f"### {r['alert']}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Meaning**", "**Likely causes**", "**Check**", "**Do**"):
            assert part in section, (r["alert"], part)


def test_segments_configmap_holds_valid_definitions():
    """The mounted segments.yaml parses with espresso's own loader and has the built-ins."""
    from state.definitions import parse_segments

    import yaml

    cm = load_docs(BASE / "espresso-configmap.yaml")[0]
    ids = [s.id for s in parse_segments(yaml.safe_load(cm["data"]["segments.yaml"]), "segments.yaml")]
    assert ids == ["email-espresso", "sms-espresso", "push-espresso"]


def test_campaigns_configmap_holds_valid_campaigns():
    """The mounted campaigns.yaml parses with espresso's campaign loader, on the mounted segments."""
    import pytest
    import yaml

    definitions = pytest.importorskip("state.campaigns.definitions")
    from state.definitions import parse_segments

    data = load_docs(BASE / "espresso-configmap.yaml")[0]["data"]
    segments = parse_segments(yaml.safe_load(data["segments.yaml"]), "segments.yaml")
    campaigns = definitions.parse_campaigns(yaml.safe_load(data["campaigns.yaml"]), "campaigns.yaml", segments)
    assert campaigns.campaigns


def _dockerfile():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return [ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]


def test_dockerfile_exposes_the_metrics_port():
    """EXPOSE is metrics.server's DEFAULT_PORT, the port the manifests probe."""
    assert [ln.split()[1:] for ln in _dockerfile() if ln.startswith("EXPOSE")] == [[str(DEFAULT_PORT)]]


def test_dockerfile_is_multi_stage_non_root_and_runs_espresso():
    """A builder stage builds wheels, the runtime stage installs only from them, runs as the
    non-root uid the StatefulSet expects, and starts `espresso run`."""
    lines = _dockerfile()
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS builder") and stages[1].endswith(" AS runtime")
    runtime = lines[lines.index(stages[1]):]
    builder = lines[lines.index(stages[0]):lines.index(stages[1])]
    assert any("pip wheel" in ln for ln in builder)
    assert any("--no-index" in ln and "from=builder" in ln for ln in runtime)
    user = [ln.split()[1] for ln in runtime if ln.startswith("USER")]
    sts = one(load_docs(BASE / "espresso-statefulset.yaml"), "StatefulSet")
    uid = sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert user == [f"{uid}:{uid}"] and uid != 0
    assert 'ENTRYPOINT ["espresso"]' in runtime and 'CMD ["run"]' in runtime
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "espresso" in scripts


def test_dockerignore_sends_the_packages_and_nothing_else():
    """.dockerignore excludes everything but pyproject.toml, README.md and the packages
    pyproject.toml builds."""
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {re.sub(r"\*$", "", p) for p in setuptools["packages"]["find"]["include"]}
    assert included == {"pyproject.toml", "README.md"} | packages
