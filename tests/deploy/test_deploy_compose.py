"""deploy/compose.yaml: valid against the Compose Specification schema (check-jsonschema's vendored copy), a
KRaft Apache Kafka, the agent and the monitor wired to it with healthchecks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_support import DEPLOY, compose, interpolate

from agent.rules import load_rules

CHECK_JSONSCHEMA = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_matches_the_compose_specification():
    result = _validate(DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_really_rejects_a_broken_compose_file(tmp_path):
    broken = compose()
    broken["services"]["agent"]["healthcheck"] = {"test": ["CMD", "true"], "interval": 15}  # not a duration
    broken["services"]["agent"]["depends_on"] = {"kafka": {"condition": "service_ready"}}  # no such condition
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = _validate(path)
    assert result.returncode != 0
    assert "service_ready" in result.stdout


def _kafka_env() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["kafka"]["environment"].items()}


def test_kafka_is_a_single_kraft_node_of_the_apache_image():
    kafka = compose()["services"]["kafka"]
    repository, _, tag = kafka["image"].rpartition(":")
    assert repository == "apache/kafka" and tag and tag != "latest"
    env = _kafka_env()
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert not any("ZOOKEEPER" in key for key in env)
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


@pytest.mark.parametrize("service", ["agent", "agent-gpu", "monitor"])
def test_services_reach_an_advertised_kafka_listener_once_it_is_healthy(service):
    spec = compose()["services"][service]
    bootstrap = spec["environment"]["AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS"]
    advertised = [item.split("://")[1] for item in _kafka_env()["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert bootstrap in advertised
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert spec["read_only"] is True and "/tmp" in spec["tmpfs"]


@pytest.mark.parametrize("service", ["agent", "agent-gpu"])
def test_agents_publish_the_ingest_port_require_a_token_and_check_healthz(service):
    spec = compose()["services"][service]
    env = spec["environment"]
    port = env["AFFECTSTREAM_INGEST__PORT"]
    assert any(mapping.split(":")[-1] == port for mapping in spec["ports"])
    assert f"127.0.0.1:{port}/healthz" in " ".join(spec["healthcheck"]["test"])
    with pytest.raises(KeyError, match="INGEST_TOKENS is required"):  # no token is baked into the file
        interpolate(env["AFFECTSTREAM_INGEST__TOKENS"], {})
    assert any(volume.endswith(":/var/lib/affectstream") for volume in spec["volumes"])


def test_gpu_agent_reserves_an_nvidia_gpu_and_runs_the_cuda_image():
    spec = compose()["services"]["agent-gpu"]
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    assert (DEPLOY.parent / spec["build"]["dockerfile"]).is_file()
    [device] = spec["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert spec["profiles"] == ["gpu"]


def test_monitor_gets_a_rules_file_the_monitor_accepts():
    spec = compose()["services"]["monitor"]
    rules_path = spec["environment"]["AFFECTSTREAM_MONITOR__RULES_PATH"]
    [mount] = [v for v in spec["volumes"] if v.split(":")[1] == rules_path]
    host_path = DEPLOY / mount.split(":")[0]
    rules = load_rules(host_path)  # the monitor's own loader and validation
    assert rules and all(rule.name for rule in rules)
