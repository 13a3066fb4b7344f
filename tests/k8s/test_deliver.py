"""The `espresso deliver` Deployment: runs the command with its own probes on the port the
metrics server serves, restricted like the flow's pods, its Secrets documented, scraped by
its PodMonitor, and watched by an alert that reads what deliver exports."""

from __future__ import annotations

from metrics.server import DEFAULT_PORT, LIVEZ_PATH, METRICS_PATH, PORT_NAME, READYZ_PATH

from .manifests import OPERATIONS, env_of, matches, one


def _deliver(objs):
    return one(objs, "Deployment", "espresso-deliver")


def _container(objs):
    [c] = _deliver(objs)["spec"]["template"]["spec"]["containers"]
    return c


def test_deployment_runs_deliver_with_its_probes(deployment):
    dep = _deliver(deployment)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert matches(dep["spec"]["selector"], labels) and labels["app.kubernetes.io/component"] == "deliver"
    c = _container(deployment)
    assert c["command"] + c.get("args", []) == ["espresso", "deliver"]
    port = next(p for p in c["ports"] if p["name"] == PORT_NAME)
    assert port["containerPort"] == DEFAULT_PORT == int(env_of(c)["ESPRESSO_METRICS_PORT"]["value"])
    assert c["livenessProbe"]["httpGet"] == {"path": LIVEZ_PATH, "port": PORT_NAME}
    assert c["readinessProbe"]["httpGet"] == {"path": READYZ_PATH, "port": PORT_NAME}
    assert dep["spec"]["replicas"] >= 2
    res = c["resources"]
    assert res["requests"]["memory"] == res["limits"]["memory"] and res["requests"]["cpu"]


def test_deliver_settings_are_real_and_secrets_documented(deployment):
    """Every ESPRESSO_* variable is one `espresso deliver` reads; Secrets are in the table."""
    from commands.deliver import DeliverSettings

    known = {o.env for f in DeliverSettings.model_fields.values() for o in f.metadata if getattr(o, "env", None)}
    known |= {"ESPRESSO_WEBHOOK_URL", "ESPRESSO_WEBHOOK_BATCH", "ESPRESSO_WEBHOOK_AUTH", "ESPRESSO_METRICS_PORT"}
    env = env_of(_container(deployment))
    assert {"REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "ESPRESSO_WEBHOOK_URL"} <= set(env)
    assert {k for k in env if k.startswith("ESPRESSO_")} <= known
    doc = OPERATIONS.read_text(encoding="utf-8")
    section = doc[doc.index("### Secrets to create"):doc.index("### Apply")]
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            row = next((ln for ln in section.splitlines() if ln.startswith(f"| `{ref['name']}`")), "")
            assert f"`{ref['key']}`" in row, ref


def test_deliver_pods_are_restricted(deployment):
    pod = _deliver(deployment)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    sc = _container(deployment)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_podmonitor_scrapes_deliver_and_the_alert_selects_its_job(deployment):
    pm = one(deployment, "PodMonitor", "espresso-deliver")
    labels = _deliver(deployment)["spec"]["template"]["metadata"]["labels"]
    assert matches(pm["spec"]["selector"], labels)
    assert [(e["port"], e["path"]) for e in pm["spec"]["podMetricsEndpoints"]] == [(PORT_NAME, METRICS_PATH)]
    job = labels[pm["spec"]["jobLabel"]]
    rules = one(deployment, "PrometheusRule")["spec"]["groups"][0]["rules"]
    alert = next(r for r in rules if r["alert"] == "EspressoDeliveryBehind")
    assert f'job="{job}"' in alert["expr"] and "espresso_kafka_consumer_lag" in alert["expr"]
