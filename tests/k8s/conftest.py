"""`deployment`: the objects of one way to deploy, checked the same way: the base files as
written, `kubectl kustomize k8s/` and `kubectl kustomize k8s/overlays/example`."""

from __future__ import annotations

import pytest

from .manifests import K8S, OVERLAY, base_objects, render


@pytest.fixture(scope="session", params=["base files", "k8s/", "overlays/example"])
def deployment(request) -> list[dict]:
    if request.param == "base files":
        return base_objects()
    objects = render(K8S if request.param == "k8s/" else OVERLAY)
    if objects is None:
        pytest.skip("kubectl not installed: kustomize renderings not checked")
    return objects
