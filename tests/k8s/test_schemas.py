"""Every manifest is valid: Kubernetes' own schemas for built-in kinds (kubernetes-validate,
offline, strict: unknown fields are errors), and the Prometheus Operator CRDs checked here."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from .manifests import base_files, load_docs

KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")  # oldest and newest we claim to support
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
DURATION = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
SEVERITIES = {"critical", "warning", "info"}


def _duration(text: object) -> bool:
    return isinstance(text, str) and text != "" and bool(DURATION.match(text))


def test_one_object_per_file_named_after_its_kind():
    """k8s/base holds one object per file, named espresso-[component-]<kind>.yaml."""
    for path in base_files():
        docs = load_docs(path)
        assert len(docs) == 1, f"{path.name}: {len(docs)} objects"
        assert path.name.endswith(f"-{docs[0]['kind'].lower()}.yaml"), path.name
        labels = docs[0]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "espresso" and labels["app.kubernetes.io/part-of"] == "espresso"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(deployment, version):
    """Each built-in object validates strictly against that Kubernetes version's schema."""
    checked = 0
    for obj in deployment:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc.message}")
        checked += 1
    assert checked >= 7


def test_servicemonitor_structure(deployment):
    """ServiceMonitor: monitoring.coreos.com/v1, a selector, endpoints naming a port, a path
    and durations Prometheus accepts."""
    for sm in (o for o in deployment if o["kind"] == "ServiceMonitor"):
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"} and sm["metadata"]["name"]
        spec = sm["spec"]
        assert set(spec) <= {"selector", "endpoints", "jobLabel", "namespaceSelector", "targetLabels",
                             "podTargetLabels", "sampleLimit"}
        assert spec["selector"].get("matchLabels")
        assert spec["endpoints"]
        for ep in spec["endpoints"]:
            assert isinstance(ep.get("port"), str) and "targetPort" not in ep
            assert ep["path"].startswith("/") and ep.get("scheme", "http") in ("http", "https")
            assert _duration(ep["interval"]) and _duration(ep["scrapeTimeout"])


def test_podmonitor_structure(deployment):
    """PodMonitor (the deliver pods, which have no Service): a selector, endpoints naming a
    container port, a path and durations Prometheus accepts."""
    pms = [o for o in deployment if o["kind"] == "PodMonitor"]
    assert pms
    for pm in pms:
        assert pm["apiVersion"] == "monitoring.coreos.com/v1"
        spec = pm["spec"]
        assert set(spec) <= {"selector", "podMetricsEndpoints", "jobLabel", "namespaceSelector", "podTargetLabels",
                             "sampleLimit"}
        assert spec["selector"].get("matchLabels") and spec["podMetricsEndpoints"]
        for ep in spec["podMetricsEndpoints"]:
            assert isinstance(ep.get("port"), str) and ep["path"].startswith("/")
            assert _duration(ep["interval"]) and _duration(ep["scrapeTimeout"])


def test_prometheusrule_structure(deployment):
    """PrometheusRule: groups with unique names; each rule is an alert (or a recording) with
    an expr, and alerts carry for, severity, summary, description and runbook_url."""
    rules = [o for o in deployment if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names))
    alerts = []
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and r["expr"].strip()
            if "alert" in r:
                alerts.append(r["alert"])
                assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", r["alert"])
                assert _duration(r["for"]), r["alert"]
                assert r["labels"]["severity"] in SEVERITIES, r["alert"]
                for key in ("summary", "description", "runbook_url"):
                    assert str(r["annotations"].get(key, "")).strip(), f"{r['alert']}: no {key}"
    assert len(alerts) == len(set(alerts)) == 8


@pytest.mark.integration
def test_rules_pass_promtool(tmp_path):
    """promtool (Prometheus' own checker) accepts the rule groups."""
    import subprocess

    import yaml

    from tests.metrics.prometheus import ensure_prometheus
    from tests.metrics.promql import load_rules

    ensure_prometheus()
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": load_rules()["spec"]["groups"]}))
    out = subprocess.run(["/usr/bin/promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_backfill_job_validates_and_runs_the_backfill_command(version):
    """k8s/jobs: one-off manifests applied by hand (docs/operations.md), valid like the base."""
    from .manifests import K8S

    [job] = load_docs(K8S / "jobs" / "espresso-backfill-job.yaml")
    kubernetes_validate.validate(job, version, strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["espresso"] and container["args"][0] == "backfill"
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["ESPRESSO_RECOVERY_DIR"] == mounts["recovery"] and container["args"][2] == mounts["archive"]
