"""Kustomizations list every manifest; the example overlay is consistent and renders."""

from __future__ import annotations

import pytest
import yaml

from .manifests import BASE, K8S, OVERLAY, base_files, load_docs, one, render


def _kustomization(directory):
    return yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))


def test_root_kustomization_lists_every_manifest():
    """k8s/kustomization.yaml lists every file of k8s/base (and nothing missing or extra)."""
    listed = _kustomization(K8S)["resources"]
    assert sorted(listed) == sorted(f"base/{p.name}" for p in base_files())
    assert len(listed) == len(set(listed))
    assert all((K8S / r).is_file() for r in listed)


def test_base_kustomization_lists_the_same_files():
    """k8s/base/kustomization.yaml, the overlays' base, lists the same files as the root."""
    assert sorted(_kustomization(BASE)["resources"]) == sorted(p.name for p in base_files())
    assert _kustomization(BASE).get("images") == _kustomization(K8S).get("images")


def test_no_stray_yaml_in_k8s():
    """Every YAML file under k8s/ is a listed manifest, a kustomization, an overlay's patch or a
    one-off Job applied by hand (k8s/jobs, validated in test_schemas.py)."""
    patches = {OVERLAY / p["path"] for p in _kustomization(OVERLAY).get("patches", [])}
    jobs = set((K8S / "jobs").glob("espresso-*-job.yaml"))
    for path in K8S.rglob("*.yaml"):
        assert path.name == "kustomization.yaml" or path in patches or path in base_files() or path in jobs, path


def test_overlay_builds_on_base_and_keeps_the_cluster_consistent():
    """The example overlay uses ../../base, 3 replicas, and patches BYTEWAX_REPLICAS to match
    in both containers, more memory, other topics."""
    k = _kustomization(OVERLAY)
    assert k["resources"] == ["../../base"]
    count = next(r["count"] for r in k["replicas"] if r["name"] == "espresso")
    assert count == 3
    patch = load_docs(OVERLAY / k["patches"][0]["path"])[0]["spec"]["template"]["spec"]
    for c in patch["initContainers"] + patch["containers"]:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["BYTEWAX_REPLICAS"] == str(count), c["name"]


def test_renderings_match_the_files():
    """`kubectl kustomize k8s/` and `k8s/base` give the base objects; the overlay changes
    replicas, memory and topics only where meant."""
    root, base, overlay = render(K8S), render(BASE), render(OVERLAY)
    if root is None:
        pytest.skip("kubectl not installed")
    assert root == base
    assert len(overlay) == len(base)
    sts = one(overlay, "StatefulSet", "espresso")
    assert sts["metadata"]["namespace"] == "shop-espresso" and sts["spec"]["replicas"] == 3
    main = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["ESPRESSO_INPUT_TOPIC"] != "contact-events"
    assert main["resources"]["limits"]["memory"] == "3Gi"
    assert "valueFrom" in {e["name"]: e for e in main["env"]}["KAFKA_SASL_PASSWORD"]
