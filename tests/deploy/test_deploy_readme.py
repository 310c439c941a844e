"""deploy/README.md says what the code does: every setting, chart value and command it names exists, the
defaults, ports, paths and resource names it states are the chart's and the settings', and its Kubernetes
examples pass the schema checks the chart passes."""

from __future__ import annotations

import re
import shlex
import textwrap
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHART,
    DEPLOY,
    REPO,
    agent_workload,
    cli_group,
    compose,
    monitor_workload,
    one,
    pod_spec,
    render_chart,
)
from pydantic import BaseModel

from agent.settings import Settings

README = (DEPLOY / "README.md").read_text(encoding="utf-8")
PROSE = " ".join(README.split())  # line breaks and indentation as single spaces
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
# Values of the Deployment-based chart that the README names as gone (the schema refuses them: test_deploy_helm).
REMOVED_VALUES = {
    "service.sessionAffinityTimeoutSeconds",
    "agent.terminationGracePeriodSeconds",
    "agent.spoolSizeLimit",
}
SETTINGS_MAPS = {"config"}  # a values map whose keys are AFFECTSTREAM_ settings, checked by test_deploy_settings

# Inline code, which may wrap over a line break.
_CODE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
_DOTTED = re.compile(r"^([a-z][A-Za-z]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:=.*)?$")
_SET = re.compile(r"--set(?:-string)? ([A-Za-z][\w.]*)=")


def _code_spans() -> list[str]:
    prose = re.sub(r"```.*?```", "", README, flags=re.DOTALL)  # fenced blocks are checked on their own
    return [" ".join(span.split()) for span in _CODE.findall(prose)]


def _dotted_names() -> set[tuple[str, ...]]:
    names = set()
    for span in _code_spans():
        match = _DOTTED.match(span)
        if match:
            names.add((match[1], *match[2][1:].split(".")))
    names.update(tuple(name.split(".")) for name in _SET.findall(README))
    # Only names of settings or chart values (not file names such as `values.yaml`).
    return {n for n in names if n[0] in Settings.model_fields or n[0] in VALUES}


def _in_settings(path: tuple[str, ...]) -> bool:
    model: type[BaseModel] | None = Settings
    for part in path:
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def _in_values(path: tuple[str, ...]) -> bool:
    node: Any = VALUES
    for depth, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            return depth > 0 and path[depth - 1] in SETTINGS_MAPS and part.startswith("AFFECTSTREAM_")
        node = node[part]
    return True


def test_the_readme_names_settings_and_values_the_scan_really_finds():
    names = {".".join(n) for n in _dotted_names()}
    assert {"ingest.public_url", "ingest.drain_timeout_s", "publish.spool_max_bytes"} <= names
    assert {"agent.spool.size", "agent.drainTimeoutSeconds", "agent.publicUrl", "monitor.rules"} <= names
    assert REMOVED_VALUES <= names


@pytest.mark.parametrize("name", sorted(".".join(n) for n in _dotted_names()))
def test_every_setting_and_chart_value_the_readme_names_exists(name):
    path = tuple(name.split("."))
    section = path[0]
    is_setting_section = section in Settings.model_fields
    is_values_key = section in VALUES
    if name in REMOVED_VALUES:
        assert not _in_values(path), f"{name}: the README says it is gone, but values.yaml has it"
        return
    if is_setting_section and not is_values_key:
        assert _in_settings(path), f"{name}: no such setting in agent/settings.py"
    elif is_values_key and not is_setting_section:
        assert _in_values(path), f"{name}: no such value in {CHART.relative_to(REPO)}/values.yaml"
    else:  # monitor.*: a settings section and a chart value alike
        assert _in_settings(path) or _in_values(path), f"{name}: neither a setting nor a chart value"


def _commands() -> list[list[str]]:
    found: dict[tuple[str, ...], None] = {}
    for span in _code_spans():
        if span.startswith("affectstream "):
            argv = shlex.split(span)[1:]
            if argv and argv[0][0].isalpha():
                found[tuple(argv)] = None
    return [list(argv) for argv in found]


def test_the_readme_shows_affectstream_commands():
    assert {"serve", "monitor", "token"} <= {argv[0] for argv in _commands()}


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv))
def test_every_command_the_readme_shows_is_a_cli_command(argv):
    command = cli_group().commands.get(argv[0])
    assert command is not None, f"`affectstream {argv[0]}` is not a CLI command"
    args = argv[1:]
    while args and not args[0].startswith("-") and hasattr(command, "commands"):
        sub = command.commands.get(args[0])
        assert sub is not None, f"`affectstream {' '.join(argv)}`: no subcommand {args[0]!r}"
        command, args = sub, args[1:]
    options = {opt for param in command.params for opt in param.opts}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"`affectstream {' '.join(argv)}`: no option {arg}"


def _claim(pattern: str) -> str:
    match = re.search(pattern, PROSE)
    assert match, f"deploy/README.md no longer says {pattern!r}: update it or this test"
    return match[1]


def _defaults(section: str) -> Any:
    """A settings section's defaults (not the environment's)."""
    return Settings.model_fields[section].default


def test_drain_spool_and_budget_defaults_are_the_charts_and_the_settings():
    ingest, publish = _defaults("ingest"), _defaults("publish")
    drain = int(_claim(r"`agent\.drainTimeoutSeconds` \(default (\d+)"))
    margin = int(_claim(r"`agent\.drainMarginSeconds` \(default (\d+)"))
    assert drain == VALUES["agent"]["drainTimeoutSeconds"] == ingest.drain_timeout_s
    assert margin == VALUES["agent"]["drainMarginSeconds"]
    assert f"(default {drain:g} s)" in PROSE  # the settings table
    grace = pod_spec(agent_workload(render_chart(values_file="gpu-values.yaml")))["terminationGracePeriodSeconds"]
    assert int(_claim(r"before they are spooled\): (\d+) s")) == grace == drain + margin
    assert float(_claim(r"`publish\.delivery_timeout_s`, (\d+) s")) == publish.delivery_timeout_s
    assert _claim(r"`agent\.spool\.size`, default (\w+),") == VALUES["agent"]["spool"]["size"]
    assert int(_claim(r"`publish\.spool_max_bytes` \((\d+) MiB\)")) * 2**20 == publish.spool_max_bytes
    assert _claim(r"`agent\.spool\.retentionPolicy` \(default `(\w+)` for both\)") == "Retain"
    assert set(VALUES["agent"]["spool"]["retentionPolicy"].values()) == {"Retain"}
    assert VALUES["agent"]["spool"]["emptyDir"] is False
    pdb = int(_claim(r"`agent\.podDisruptionBudget`, `maxUnavailable: (\d+)`"))
    assert pdb == VALUES["agent"]["podDisruptionBudget"]["maxUnavailable"]


def test_monitor_port_stream_idle_and_offset_reset_are_the_settings_defaults():
    monitor = _defaults("monitor")
    assert int(_claim(r"`/metrics` on port (\d+) \(the chart's `monitor\.port`")) == monitor.port
    assert monitor.port == VALUES["monitor"]["port"] == 9102
    assert f"default `0.0.0.0:{monitor.port}`" in PROSE and monitor.host == "0.0.0.0"
    assert float(_claim(r"`monitor\.stream_idle_s` \((\d+) s\)")) == monitor.stream_idle_s
    assert "starts at the latest scores (`monitor.auto_offset_reset`)" in PROSE
    assert monitor.auto_offset_reset == "latest"
    [container] = pod_spec(monitor_workload(render_chart(values_file="gpu-values.yaml")))["containers"]
    assert container["ports"][0]["containerPort"] == monitor.port
    assert f"localhost:{monitor.port}/metrics" in PROSE
    assert compose()["services"]["monitor"]["environment"]["AFFECTSTREAM_MONITOR__PORT"] == str(monitor.port)


def test_compose_drain_claims_match_the_compose_file():
    agent = compose()["services"]["agent"]
    drain = _claim(r"`AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S` is (\d+) and `stop_grace_period`")
    assert agent["environment"]["AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S"] == drain
    assert f"{agent['stop_grace_period'].removesuffix('s')} s" == _claim(r"`stop_grace_period` (\d+ s)")


def test_probe_paths_and_ports_are_the_ones_the_readme_names_and_the_code_serves():
    manifests = render_chart(values_file="gpu-values.yaml")
    sources = "".join(p.read_text() for p in (REPO / "agent").glob("*.py"))
    for workload in (agent_workload(manifests), monitor_workload(manifests)):
        [container] = pod_spec(workload)["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert f"`{path}`" in README, f"{workload['metadata']['name']} {probe}: {path} not in the README"
            assert f'"{path}"' in sources, f"{path}: no route of that path in agent/"
    [container] = pod_spec(agent_workload(manifests))["containers"]
    assert _claim(r"listens on port (\d+) \(WHIP") == str(container["ports"][0]["containerPort"])
    server_doc = " ".join((REPO / "agent" / "server.py").read_text().split())
    assert _claim(r"readiness on `/readyz`, which means (\"this process can take a new call\")") in server_doc
    assert "sessionAffinity" not in yaml.safe_dump(manifests)


def test_resource_names_and_the_default_public_url_are_what_the_chart_renders():
    manifests = render_chart(values_file="gpu-values.yaml")  # release "calls" in namespace "affect", as the README
    names = {m["metadata"]["name"] for m in manifests}
    agent = agent_workload(manifests)
    pods = {f"{agent['metadata']['name']}-{n}" for n in range(3)}
    claims = {f"state-{pod}" for pod in pods} | {"state-<pod>"}
    prose = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    mentioned = set(re.findall(r"calls-affectstream[\w.<>-]*\w>?", prose))
    for name in mentioned:
        first = name.split(".")[0]
        assert first in names | pods | claims, f"{name}: the chart renders no {first}"
    headless = one(manifests, "Service", "-agent-headless")["metadata"]["name"]
    assert f"calls-affectstream-agent-0.{headless}.affect.svc.cluster.local" in mentioned
    [container] = pod_spec(agent)["containers"]
    url = {e["name"]: e.get("value") for e in container["env"]}["AFFECTSTREAM_INGEST__PUBLIC_URL"]
    assert f"`{url}`" in README
    assert agent["spec"]["podManagementPolicy"] in README and "`volumeClaimTemplates`" in README


def _examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.DOTALL)
    docs = [doc for block in blocks for doc in yaml.safe_load_all(textwrap.dedent(block)) if isinstance(doc, dict)]
    return [doc for doc in docs if "apiVersion" in doc and "kind" in doc]


def test_the_readmes_kubernetes_examples_are_valid_and_fit_the_chart():
    import kubernetes_validate

    examples = _examples()
    assert {doc["kind"] for doc in examples} == {"Service", "Ingress"}
    for doc in examples:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    [container] = pod_spec(agent_workload(render_chart(values_file="gpu-values.yaml")))["containers"]
    port_names = {p["name"] for p in container["ports"]}
    service = next(doc for doc in examples if doc["kind"] == "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert service["spec"]["publishNotReadyAddresses"] is True  # a full or draining pod still owns its sessions
