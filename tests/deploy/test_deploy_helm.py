"""The Helm chart: `helm lint` and rendering through the real Helm SDK (helm-python-sdk), each manifest
checked against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), then what they must mean."""

from __future__ import annotations

import pytest
import yaml
from deploy_support import (
    CHART,
    agent_workload,
    by_kind,
    monitor_workload,
    one,
    pod_spec,
    render_chart,
    workloads,
)

from agent import metrics
from agent.rules import load_rules

VALUES_FILES = ("gpu-values.yaml", "cpu-values.yaml")
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # an older supported release and the newest schemas shipped
KEY = "k" * 32  # the shortest secrets.tokenSecret the agent accepts
AGENT_SELECTOR = {
    "app.kubernetes.io/name": "affectstream",
    "app.kubernetes.io/instance": "calls",
    "app.kubernetes.io/component": "agent",
}


def _lint(values: dict) -> dict:
    import helm_python as helm

    return helm.lint(str(CHART), values, strict=True)


def _whip_service(manifests):
    return one(manifests, "Service", "-affectstream")


def _headless_service(manifests):
    return one(manifests, "Service", "-agent-headless")


def _env(container) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


def _agent_container(manifests):
    [container] = pod_spec(agent_workload(manifests))["containers"]
    return container


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict_finds_nothing_above_info(values_file):
    report = _lint(yaml.safe_load((CHART / "ci" / values_file).read_text()))
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_helm_lint_really_reports_bad_values():
    report = _lint({"secrets": {"tokenSecret": KEY}, "agent": {"gpu": {"enable": True}}})
    assert any("additional properties 'enable' not allowed" in e for e in report["errors"])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize(
    ("values_file", "values"),
    [
        ("gpu-values.yaml", {}),
        ("cpu-values.yaml", {}),
        ("cpu-values.yaml", {"agent": {"spool": {"emptyDir": True}, "hostNetwork": True}}),
    ],
    ids=["gpu", "cpu", "cpu-emptydir-hostnetwork"],
)
def test_rendered_manifests_validate_against_kubernetes_schemas(values_file, values, kube_version):
    import kubernetes_validate

    manifests = render_chart(values, values_file=values_file)
    kinds = {m["kind"] for m in manifests}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    problems = []
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in the Kubernetes OpenAPI; checked below
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_schema_validation_really_rejects_a_broken_manifest():
    import kubernetes_validate

    agent = agent_workload(render_chart(values_file="gpu-values.yaml"))
    agent["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] = "1Gi"
    with pytest.raises(kubernetes_validate.ValidationError, match="not of type 'object'"):
        kubernetes_validate.validate(agent, KUBE_VERSIONS[-1], strict=True)


def test_gpu_agent_requests_a_gpu_runs_the_cuda_image_and_probes_health():
    manifests = render_chart(values_file="gpu-values.yaml")
    pod = pod_spec(agent_workload(manifests))
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert container["args"] == ["serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    # Readiness is "can take a new call"; liveness stays true while the pod drains.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # models load before the port opens
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/affectstream"} <= mounts  # the only writable places
    assert "lifecycle" not in container  # no preStop: the agent drains on SIGTERM itself


def test_agent_is_a_statefulset_with_per_pod_dns_from_a_headless_service():
    manifests = render_chart(values_file="gpu-values.yaml")
    assert by_kind(manifests, "Deployment") == [monitor_workload(manifests)]
    agent = agent_workload(manifests)
    headless = _headless_service(manifests)
    assert agent["spec"]["serviceName"] == headless["metadata"]["name"]
    assert agent["spec"]["podManagementPolicy"] == "Parallel"  # a full (unready) pod must not block scale-up
    assert agent["spec"]["selector"]["matchLabels"] == AGENT_SELECTOR
    assert headless["spec"]["clusterIP"] == "None"
    # Full and draining pods are unready but keep their sessions and metrics: their DNS names stay.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == AGENT_SELECTOR
    assert [p["targetPort"] for p in headless["spec"]["ports"]] == ["http"]


def test_public_url_defaults_to_the_pods_dns_name_under_the_headless_service():
    manifests = render_chart(values_file="cpu-values.yaml")
    env = _env(_agent_container(manifests))
    headless = _headless_service(manifests)["metadata"]["name"]
    assert env["AFFECTSTREAM_INGEST__PUBLIC_URL"] == (f"http://$(POD_NAME).{headless}.affect.svc.cluster.local:8080")
    [pod_name] = [e for e in _agent_container(manifests)["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    names = [e["name"] for e in _agent_container(manifests)["env"]]
    assert names.index("POD_NAME") < names.index("AFFECTSTREAM_INGEST__PUBLIC_URL")  # Kubernetes expands it


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"agent": {"publicUrl": "https://{hostname}.whip.example.org"}}, "https://{hostname}.whip.example.org"),
        (
            {"agent": {"publicUrl": "https://{hostname}.{{ .Release.Namespace }}.example.org"}},
            "https://{hostname}.affect.example.org",
        ),
        (
            {"agent": {"port": 8443, "config": {"AFFECTSTREAM_INGEST__TLS_CERT_PATH": "/tls/tls.crt"}}},
            "https://$(POD_NAME).calls-affectstream-agent-headless.affect.svc.cluster.local:8443",
        ),
        (
            {"clusterDomain": "corp.internal"},
            "http://$(POD_NAME).calls-affectstream-agent-headless.affect.svc.corp.internal:8080",
        ),
    ],
)
def test_public_url_takes_a_template(values, expected):
    env = _env(_agent_container(render_chart(values, values_file="cpu-values.yaml")))
    assert env["AFFECTSTREAM_INGEST__PUBLIC_URL"] == expected


def test_spool_is_a_persistent_volume_claim_per_pod():
    manifests = render_chart(values_file="gpu-values.yaml")
    agent = agent_workload(manifests)
    [claim] = agent["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert agent["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    pod = pod_spec(agent)
    assert "state" not in {v["name"] for v in pod["volumes"]}  # the claim, not a pod volume
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "state"]
    assert _env(container)["AFFECTSTREAM_PUBLISH__SPOOL_DIR"].startswith(mount["mountPath"] + "/")
    assert pod["securityContext"]["fsGroup"] == 10001  # the non-root agent can write the volume
    # The default: the cluster's default storage class, 1Gi; "-" asks for no storage class at all.
    [claim] = agent_workload(render_chart(values_file="cpu-values.yaml"))["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"] and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    values = {"agent": {"spool": {"storageClass": "-"}}}
    [claim] = agent_workload(render_chart(values, values_file="cpu-values.yaml"))["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""


def test_spool_emptydir_opt_out_has_no_claim():
    agent = agent_workload(render_chart({"agent": {"spool": {"emptyDir": True}}}, values_file="cpu-values.yaml"))
    assert "volumeClaimTemplates" not in agent["spec"]
    assert "persistentVolumeClaimRetentionPolicy" not in agent["spec"]
    [state] = [v for v in pod_spec(agent)["volumes"] if v["name"] == "state"]
    assert state == {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}}
    # values.yaml says what the opt-out costs.
    assert "lost whenever their pod is deleted" in (CHART / "values.yaml").read_text()


@pytest.mark.parametrize(("drain", "margin"), [(300, 60), (0, 60), (1800, 30)])
def test_grace_period_is_the_drain_timeout_plus_a_margin(drain, margin):
    values = {"agent": {"drainTimeoutSeconds": drain, "drainMarginSeconds": margin}}
    manifests = render_chart(values, values_file="cpu-values.yaml")
    pod = pod_spec(agent_workload(manifests))
    assert pod["terminationGracePeriodSeconds"] == drain + margin
    [container] = pod["containers"]
    assert float(_env(container)["AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S"]) == drain


def test_default_grace_period_outlasts_the_settings_drain_timeout():
    from agent.settings import IngestSettings

    pod = pod_spec(agent_workload(render_chart(values_file="gpu-values.yaml")))
    default_drain = IngestSettings.model_fields["drain_timeout_s"].default
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["agent"]["drainTimeoutSeconds"] == default_drain  # the chart keeps the agent's default
    assert pod["terminationGracePeriodSeconds"] == default_drain + values["agent"]["drainMarginSeconds"]
    assert values["agent"]["drainMarginSeconds"] >= 30  # covers publish.delivery_timeout_s's default


def test_pod_disruption_budget_evicts_one_agent_at_a_time():
    manifests = render_chart(values_file="gpu-values.yaml")
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": AGENT_SELECTOR}}
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        agent_workload(manifests)["spec"]["template"]["metadata"]["labels"].items()
    )
    values = {"agent": {"podDisruptionBudget": {"maxUnavailable": "25%"}}}
    assert (
        one(render_chart(values, values_file="cpu-values.yaml"), "PodDisruptionBudget")["spec"]["maxUnavailable"]
        == "25%"
    )
    values = {"agent": {"podDisruptionBudget": {"enabled": False}}}
    assert by_kind(render_chart(values, values_file="cpu-values.yaml"), "PodDisruptionBudget") == []


def test_cpu_agent_requests_no_gpu_and_keeps_fixed_replicas():
    manifests = render_chart(values_file="cpu-values.yaml")
    agent = agent_workload(manifests)
    [container] = pod_spec(agent)["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["image"].endswith("-cpu")
    assert agent["spec"]["replicas"] == 2
    assert by_kind(manifests, "HorizontalPodAutoscaler") == []
    assert [w["metadata"]["name"] for w in workloads(manifests)] == [agent["metadata"]["name"]]


def test_whip_service_has_no_session_affinity_and_selects_only_agent_pods():
    manifests = render_chart(values_file="gpu-values.yaml")
    service = _whip_service(manifests)
    assert "sessionAffinity" not in service["spec"] and "sessionAffinityConfig" not in service["spec"]
    for each in by_kind(manifests, "Service"):
        assert each["spec"].get("sessionAffinity", "None") == "None", each["metadata"]["name"]
    agent_labels = agent_workload(manifests)["spec"]["template"]["metadata"]["labels"]
    monitor_labels = monitor_workload(manifests)["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= agent_labels.items()
    assert not selector.items() <= monitor_labels.items()
    assert "publishNotReadyAddresses" not in service["spec"]  # new calls go to pods that can take them
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"


def test_autoscaler_scales_the_agent_statefulset_on_the_active_sessions_metric():
    manifests = render_chart(values_file="gpu-values.yaml")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    agent = agent_workload(manifests)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": agent["metadata"]["name"],
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    # The metric the agent really exports (agent/metrics.py), per pod.
    assert metric["pods"]["metric"]["name"] == "affectstream_active_sessions"
    assert metrics.ACTIVE_SESSIONS._name == "affectstream_active_sessions"
    assert float(metric["pods"]["target"]["averageValue"]) > 0
    assert "replicas" not in agent["spec"]  # the autoscaler owns the replica count
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_secrets_reach_the_pods_by_reference_only():
    manifests = render_chart(values_file="gpu-values.yaml")
    [secret] = by_kind(manifests, "Secret")
    assert secret["stringData"] == {
        "token-secret": "test-token-secret-0123456789abcdef",
        "kafka-sasl-password": "test-sasl-password",
        "turn-credential": "test-turn-credential",
    }
    configmap_text = yaml.safe_dump(by_kind(manifests, "ConfigMap"))
    for value in secret["stringData"].values():
        assert value not in configmap_text
    refs = {}
    for workload in workloads(manifests):
        for container in pod_spec(workload)["containers"]:
            for entry in container["env"]:
                assert not any(v in entry.get("value", "") for v in secret["stringData"].values())
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"] or ref.get("optional") is True
                    refs[entry["name"]] = ref["key"]
    assert refs["AFFECTSTREAM_INGEST__TOKEN_SECRET"] == "token-secret"


def test_static_tokens_are_still_accepted_for_development():
    manifests = render_chart({"secrets": {"ingestTokens": ["dev-a", "dev-b"]}})
    [secret] = by_kind(manifests, "Secret")
    assert secret["stringData"] == {"ingest-tokens": "dev-a,dev-b"}


def test_an_existing_secret_is_used_instead_of_creating_one():
    manifests = render_chart(values_file="cpu-values.yaml")
    assert by_kind(manifests, "Secret") == []
    container = _agent_container(manifests)
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs["AFFECTSTREAM_INGEST__TOKEN_SECRET"] == {
        "name": "affectstream-credentials",
        "key": "token-secret",
        "optional": True,
    }
    assert refs["AFFECTSTREAM_INGEST__TOKENS"]["name"] == "affectstream-credentials"


def test_monitor_runs_the_monitor_command_with_rules_it_accepts(tmp_path):
    manifests = render_chart(values_file="gpu-values.yaml")
    pod = pod_spec(monitor_workload(manifests))
    [container] = pod["containers"]
    assert container["args"] == ["monitor"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    env = _env(container)
    rules_path = env["AFFECTSTREAM_MONITOR__RULES_PATH"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "rules"]
    assert rules_path.startswith(mount["mountPath"] + "/")
    rules_map = one(manifests, "ConfigMap", "-monitor-rules")
    path = tmp_path / "rules.yaml"
    path.write_text(rules_map["data"][rules_path.rsplit("/", 1)[1]])
    assert [rule.name for rule in load_rules(path)] == ["very_low_sentiment"]


def test_monitor_serves_probes_and_metrics_on_its_port():
    manifests = render_chart(values_file="gpu-values.yaml")
    [container] = pod_spec(monitor_workload(manifests))["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    env = _env(container)
    assert env["AFFECTSTREAM_MONITOR__PORT"] == "9102" and env["AFFECTSTREAM_MONITOR__HOST"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    service = one(manifests, "Service", "-monitor")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}]
    monitor_labels = monitor_workload(manifests)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= monitor_labels.items()
    other = render_chart({"monitor": {"port": 9200}}, values_file="gpu-values.yaml")
    [container] = pod_spec(monitor_workload(other))["containers"]
    assert container["ports"][0]["containerPort"] == 9200 and _env(container)["AFFECTSTREAM_MONITOR__PORT"] == "9200"


def test_service_monitors_scrape_every_agent_pod_once_and_the_monitor():
    manifests = render_chart(values_file="gpu-values.yaml")
    services = by_kind(manifests, "Service")

    def selected(service_monitor):
        labels = service_monitor["spec"]["selector"]["matchLabels"].items()
        return [s for s in services if labels <= s["metadata"]["labels"].items()]

    agent_sm = one(manifests, "ServiceMonitor", "-agent")
    # Only the headless Service: it lists full and draining pods (their sessions count), and no pod twice.
    assert selected(agent_sm) == [_headless_service(manifests)]
    [endpoint] = agent_sm["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s"}
    assert endpoint["port"] in {p["name"] for p in _headless_service(manifests)["spec"]["ports"]}
    monitor_sm = one(manifests, "ServiceMonitor", "-monitor")
    assert selected(monitor_sm) == [one(manifests, "Service", "-monitor")]
    assert monitor_sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert by_kind(render_chart(values_file="cpu-values.yaml"), "ServiceMonitor") == []


def test_config_changes_roll_the_pods():
    before = agent_workload(render_chart(values_file="gpu-values.yaml"))
    after = agent_workload(
        render_chart({"config": {"AFFECTSTREAM_LOGGING__LEVEL": "DEBUG"}}, values_file="gpu-values.yaml")
    )
    key = "checksum/config"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != (after["spec"]["template"]["metadata"]["annotations"][key])
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "secrets.tokenSecret is empty: WHIP ingest verifies the platform's tokens"),
        ({"secrets": {"ingestTokens": ["a,b"]}}, "does not match pattern"),
        ({"secrets": {"tokenSecret": KEY}, "config": {"KAFKA_BOOTSTRAP": "x"}}, "invalid propertyName"),
        ({"secrets": {"tokenSecret": KEY}, "agent": {"gpu": {"count": 0}}}, "minimum"),
        ({"secrets": {"tokenSecret": "too-short-for-an-hmac-key"}}, "secrets.tokenSecret"),
        # The token secret (and every other secret) comes from the Secret, never the ConfigMap.
        (
            {"secrets": {"tokenSecret": KEY}, "config": {"AFFECTSTREAM_INGEST__TOKEN_SECRET": "leak"}},
            "config.AFFECTSTREAM_INGEST__TOKEN_SECRET: set by the chart; use secrets.tokenSecret",
        ),
        (
            {"secrets": {"tokenSecret": KEY}, "agent": {"config": {"AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S": "9"}}},
            "agent.config.AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S: set by the chart; use agent.drainTimeoutSeconds",
        ),
        (
            {"secrets": {"tokenSecret": KEY}, "monitor": {"config": {"AFFECTSTREAM_MONITOR__PORT": "1"}}},
            "monitor.config.AFFECTSTREAM_MONITOR__PORT: set by the chart; use monitor.port",
        ),
        ({"secrets": {"tokenSecret": KEY}, "agent": {"publicUrl": "whip.example.org"}}, "does not match pattern"),
        ({"secrets": {"tokenSecret": KEY}, "agent": {"spool": {"size": "lots"}}}, "does not match pattern"),
        # Values of the Deployment-based chart, gone with it.
        ({"secrets": {"tokenSecret": KEY}, "service": {"sessionAffinityTimeoutSeconds": 60}}, "not allowed"),
        ({"secrets": {"tokenSecret": KEY}, "agent": {"terminationGracePeriodSeconds": 60}}, "not allowed"),
        ({"secrets": {"tokenSecret": KEY}, "agent": {"spoolSizeLimit": "1Gi"}}, "not allowed"),
    ],
)
def test_bad_values_fail_to_render_with_a_clear_message(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=message):
        render_chart(values)
