"""The Helm chart: `helm lint` and rendering through the real Helm SDK (helm-python-sdk), each manifest
checked against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), then what they must mean."""

from __future__ import annotations

import pytest
import yaml
from deploy_support import CHART, by_kind, one, render_chart

from agent import metrics
from agent.rules import load_rules

VALUES_FILES = ("gpu-values.yaml", "cpu-values.yaml")
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # an older supported release and the newest schemas shipped


def _lint(values: dict) -> dict:
    import helm_python as helm

    return helm.lint(str(CHART), values, strict=True)


def _agent(manifests):
    return one(manifests, "Deployment", "-agent")


def _pod(deployment):
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict_finds_nothing_above_info(values_file):
    report = _lint(yaml.safe_load((CHART / "ci" / values_file).read_text()))
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_helm_lint_really_reports_bad_values():
    report = _lint({"secrets": {"ingestTokens": ["t"]}, "agent": {"gpu": {"enable": True}}})
    assert any("additional properties 'enable' not allowed" in e for e in report["errors"])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_rendered_manifests_validate_against_kubernetes_schemas(values_file, kube_version):
    import kubernetes_validate

    manifests = render_chart(values_file=values_file)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
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

    service = one(render_chart(values_file="gpu-values.yaml"), "Service")
    service["spec"]["ports"][0]["port"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError, match="not of type 'integer'"):
        kubernetes_validate.validate(service, KUBE_VERSIONS[-1], strict=True)


def test_gpu_agent_requests_a_gpu_runs_the_cuda_image_and_probes_health():
    pod = _pod(_agent(render_chart(values_file="gpu-values.yaml")))
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert container["args"] == ["serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "http" in ports
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/affectstream"} <= mounts  # the only writable places


def test_cpu_agent_requests_no_gpu_and_keeps_fixed_replicas():
    manifests = render_chart(values_file="cpu-values.yaml")
    agent = _agent(manifests)
    [container] = _pod(agent)["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["image"].endswith("-cpu")
    assert agent["spec"]["replicas"] == 2
    assert by_kind(manifests, "HorizontalPodAutoscaler") == []
    assert [d["metadata"]["name"] for d in by_kind(manifests, "Deployment")] == [agent["metadata"]["name"]]


def test_whip_service_is_sticky_and_selects_only_agent_pods():
    manifests = render_chart(values_file="gpu-values.yaml")
    service = one(manifests, "Service")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600
    agent_labels = _agent(manifests)["spec"]["template"]["metadata"]["labels"]
    monitor_labels = one(manifests, "Deployment", "-monitor")["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= agent_labels.items()
    assert not selector.items() <= monitor_labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"


def test_autoscaler_scales_the_agent_on_the_active_sessions_metric():
    manifests = render_chart(values_file="gpu-values.yaml")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    agent = _agent(manifests)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
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
        "ingest-tokens": "test-token-1,test-token-2",
        "kafka-sasl-password": "test-sasl-password",
        "turn-credential": "test-turn-credential",
    }
    configmap_text = yaml.safe_dump(by_kind(manifests, "ConfigMap"))
    for value in secret["stringData"].values():
        assert value not in configmap_text
    for deployment in by_kind(manifests, "Deployment"):
        for container in _pod(deployment)["containers"]:
            for entry in container["env"]:
                assert not any(v in entry.get("value", "") for v in secret["stringData"].values())
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"]


def test_an_existing_secret_is_used_instead_of_creating_one():
    manifests = render_chart(values_file="cpu-values.yaml")
    assert by_kind(manifests, "Secret") == []
    [container] = _pod(_agent(manifests))["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AFFECTSTREAM_INGEST__TOKENS"] == {"name": "affectstream-credentials", "key": "ingest-tokens"}


def test_monitor_runs_the_monitor_command_with_rules_it_accepts(tmp_path):
    manifests = render_chart(values_file="gpu-values.yaml")
    pod = _pod(one(manifests, "Deployment", "-monitor"))
    [container] = pod["containers"]
    assert container["args"] == ["monitor"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    env = {e["name"]: e.get("value") for e in container["env"]}
    rules_path = env["AFFECTSTREAM_MONITOR__RULES_PATH"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "rules"]
    assert rules_path.startswith(mount["mountPath"] + "/")
    rules_map = one(manifests, "ConfigMap", "-monitor-rules")
    path = tmp_path / "rules.yaml"
    path.write_text(rules_map["data"][rules_path.rsplit("/", 1)[1]])
    assert [rule.name for rule in load_rules(path)] == ["very_low_sentiment"]


def test_service_monitor_scrapes_the_agent_metrics_port():
    manifests = render_chart(values_file="gpu-values.yaml")
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert by_kind(render_chart(values_file="cpu-values.yaml"), "ServiceMonitor") == []


def test_config_changes_roll_the_pods():
    before = _agent(render_chart(values_file="gpu-values.yaml"))
    after = _agent(
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
        ({}, "secrets.ingestTokens is empty: WHIP ingest requires a bearer token"),
        ({"secrets": {"ingestTokens": ["a,b"]}}, "does not match pattern"),
        ({"secrets": {"ingestTokens": ["t"]}, "config": {"KAFKA_BOOTSTRAP": "x"}}, "invalid propertyName"),
        ({"secrets": {"ingestTokens": ["t"]}, "agent": {"gpu": {"count": 0}}}, "minimum"),
    ],
)
def test_bad_values_fail_to_render_with_a_clear_message(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=message):
        render_chart(values)
