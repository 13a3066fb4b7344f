"""The objects agree with each other and with the code: selectors, ports, probes, config,
secrets, volumes, cluster settings and security."""

from __future__ import annotations

import re

from metrics.server import DEFAULT_PORT, LIVEZ_PATH, METRICS_PATH, PORT_NAME, READYZ_PATH

from .manifests import OPERATIONS, containers, env_of, matches, one

RECOVERY_DIR = "/var/lib/espresso/recovery"


def _sts(objs):
    return one(objs, "StatefulSet", "espresso")


def _pod_labels(objs):
    return _sts(objs)["spec"]["template"]["metadata"]["labels"]


def _main(objs):
    return next(c for c in _sts(objs)["spec"]["template"]["spec"]["containers"] if c["name"] == "espresso")


def _port(container, name):
    return next(p for p in container["ports"] if p["name"] == name)


def test_selectors_match_the_pods(deployment):
    """StatefulSet, Service, PodDisruptionBudget and NetworkPolicy select the pod labels."""
    labels = _pod_labels(deployment)
    assert matches(_sts(deployment)["spec"]["selector"], labels)
    assert matches(one(deployment, "Service", "espresso")["spec"]["selector"], labels)
    assert matches(one(deployment, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert matches(one(deployment, "NetworkPolicy")["spec"]["podSelector"], labels)


def test_servicemonitor_selects_the_service_on_its_metrics_port(deployment):
    """The ServiceMonitor selects the Service and scrapes its `metrics` port at METRICS_PATH."""
    svc = one(deployment, "Service", "espresso")
    sm = one(deployment, "ServiceMonitor")
    assert matches(sm["spec"]["selector"], svc["metadata"]["labels"])
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [(PORT_NAME, METRICS_PATH)]
    assert PORT_NAME in {p["name"] for p in svc["spec"]["ports"]}


def test_headless_service_is_the_statefulset_service(deployment):
    """The headless Service is the StatefulSet's serviceName and publishes not-ready pods
    (peers must resolve each other before anyone is ready)."""
    svc = one(deployment, "Service", "espresso")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["metadata"]["name"] == _sts(deployment)["spec"]["serviceName"]


def test_service_ports_target_named_container_ports(deployment):
    """Each Service port targets a container port by name, with the same number."""
    main = _main(deployment)
    for p in one(deployment, "Service", "espresso")["spec"]["ports"]:
        assert isinstance(p["targetPort"], str), p
        assert _port(main, p["targetPort"])["containerPort"] == p["port"]


def test_metrics_port_and_probes_are_what_the_server_serves(deployment):
    """Port `metrics` is metrics.server's DEFAULT_PORT (also ESPRESSO_METRICS_PORT); liveness
    probes LIVEZ_PATH and readiness READYZ_PATH on it."""
    main = _main(deployment)
    assert _port(main, PORT_NAME)["containerPort"] == DEFAULT_PORT
    assert env_of(main)["ESPRESSO_METRICS_PORT"]["value"] == str(DEFAULT_PORT)
    assert main["livenessProbe"]["httpGet"] == {"path": LIVEZ_PATH, "port": PORT_NAME}
    assert main["readinessProbe"]["httpGet"] == {"path": READYZ_PATH, "port": PORT_NAME}


def test_networkpolicy_ports_exist(deployment):
    """Named ports in the NetworkPolicy are container ports; the peer egress port is the peer port."""
    main = _main(deployment)
    names = {p["name"] for p in main["ports"]}
    np = one(deployment, "NetworkPolicy")
    for rule in np["spec"]["ingress"]:
        for p in rule["ports"]:
            assert p["port"] in names
    assert PORT_NAME in {p["port"] for r in np["spec"]["ingress"] for p in r["ports"]}
    peer_egress = np["spec"]["egress"][0]
    assert matches(peer_egress["to"][0]["podSelector"], _pod_labels(deployment))
    assert peer_egress["ports"][0]["port"] == _port(main, "peer")["containerPort"]


def test_configmaps_referenced_exist_with_the_files_named(deployment):
    """ConfigMaps the pods mount exist; ESPRESSO_SEGMENTS and ESPRESSO_CAMPAIGNS name files
    of the mounted ConfigMap."""
    sts = _sts(deployment)
    maps = {o["metadata"]["name"]: o for o in deployment if o["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    for v in volumes.values():
        if "configMap" in v:
            assert v["configMap"]["name"] in maps
    main = _main(deployment)
    mount = next(m for m in main["volumeMounts"] if "configMap" in volumes.get(m["name"], {}))
    data = maps[volumes[mount["name"]]["configMap"]["name"]]["data"]
    for var in ("ESPRESSO_SEGMENTS", "ESPRESSO_CAMPAIGNS"):
        path = env_of(main)[var]["value"]
        assert path.startswith(mount["mountPath"] + "/") and path.rsplit("/", 1)[1] in data, var


def test_referenced_secrets_are_documented_as_prerequisites(deployment):
    """Every Secret the pods reference (never contain) is in docs/operations.md's table of
    Secrets to create, with the key used."""
    doc = OPERATIONS.read_text(encoding="utf-8")
    section = doc[doc.index("### Secrets to create"):doc.index("### Apply")]
    assert not [o for o in deployment if o["kind"] == "Secret"]
    refs = [e["valueFrom"]["secretKeyRef"] for c in containers(_sts(deployment)) for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})]
    assert {r["name"] for r in refs} >= {"espresso-kafka", "espresso-redis", "espresso-smtp", "espresso-webhook"}
    for r in refs:
        row = next((ln for ln in section.splitlines() if ln.startswith(f"| `{r['name']}`")), "")
        assert f"`{r['key']}`" in row, f"Secret {r['name']} key {r['key']} not documented"


def test_volume_mounts_and_recovery_directory(deployment):
    """Mounts name declared volumes; the recovery claim is mounted at ESPRESSO_RECOVERY_DIR."""
    sts = _sts(deployment)
    declared = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert claims == {"recovery"}
    for c in containers(sts):
        for m in c["volumeMounts"]:
            assert m["name"] in declared | claims, (c["name"], m["name"])
        rec = next(m for m in c["volumeMounts"] if m["name"] == "recovery")
        assert rec["mountPath"] == RECOVERY_DIR == env_of(c)["ESPRESSO_RECOVERY_DIR"]["value"]


def test_bytewax_cluster_settings_agree(deployment):
    """Bytewax conventions hold: Parallel pods, BYTEWAX_REPLICAS = replicas in every container,
    BYTEWAX_STATEFULSET_NAME = the StatefulSet, pod name from the downward API, peer service
    and port as declared, the hostfile's directory mounted, recovery partitions >= replicas."""
    sts = _sts(deployment)
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    replicas = spec["replicas"]
    init = next(c for c in spec["template"]["spec"]["initContainers"] if c["name"] == "init-cluster")
    for c in (init, _main(deployment)):
        env = env_of(c)
        assert int(env["BYTEWAX_REPLICAS"]["value"]) == replicas, c["name"]
        assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == sts["metadata"]["name"]
        assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        hostdir = env["BYTEWAX_HOSTFILE_PATH"]["value"].rsplit("/", 1)[0]
        assert hostdir in {m["mountPath"] for m in c["volumeMounts"]}
    env = env_of(init)
    assert env["ESPRESSO_PEER_SERVICE"]["value"] == spec["serviceName"]
    assert int(env["ESPRESSO_PEER_PORT"]["value"]) == _port(_main(deployment), "peer")["containerPort"]
    assert int(env["ESPRESSO_RECOVERY_PARTITIONS"]["value"]) >= replicas
    assert "python -m bytewax.recovery" in init["command"][-1]


def test_bytewax_api_writes_to_a_writable_directory(deployment):
    """Bytewax's Dataflow API writes dataflow.json to its cache path: /tmp, an emptyDir."""
    main = _main(deployment)
    env = env_of(main)
    assert "BYTEWAX_DATAFLOW_API_ENABLED" in env
    assert env["BYTEWAX_DATAFLOW_API_CACHE_PATH"]["value"] == "/tmp"


def test_containers_are_restricted(deployment):
    """Every container runs non-root with a read-only root, no privilege escalation, no
    capabilities and the runtime's seccomp profile; /tmp is an emptyDir."""
    sts = _sts(deployment)
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in containers(sts):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in volumes[tmp["name"]], c["name"]


def test_container_runs_espresso_run_with_sized_resources(deployment):
    """The container runs `espresso run`; requests and limits are set, memory request = limit."""
    main = _main(deployment)
    assert main["command"] + main.get("args", []) == ["espresso", "run"]
    res = main["resources"]
    assert res["requests"]["memory"] == res["limits"]["memory"]
    assert res["requests"]["cpu"] and res["limits"]["cpu"]


def test_every_pod_image_is_the_espresso_image(deployment):
    """Init container and container run the same espresso image (kustomize's `images` sets it)."""
    images = {c["image"] for c in containers(_sts(deployment))}
    assert len(images) == 1 and re.search(r"espresso:[\w.\-]+$", images.pop())
