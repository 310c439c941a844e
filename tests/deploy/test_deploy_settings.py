"""Every AFFECTSTREAM_* name in deploy/ is a real setting, every deployed environment builds valid Settings,
and the images and manifests run the `affectstream` console script with commands the CLI really has."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from deploy_support import (
    DEPLOY,
    DOCKERFILES,
    ENV_NAME,
    REPO,
    SPECIAL_ENV_NAMES,
    agent_workload,
    by_kind,
    cli_group,
    compose,
    console_scripts,
    container_env,
    deploy_files,
    final_env,
    interpolate,
    monitor_workload,
    pod_spec,
    render_chart,
    settings_path,
    stages,
    workloads,
)


def _names_in_deploy_files() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in deploy_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in ENV_NAME.findall(line):
                found.setdefault(name, []).append(f"{path.relative_to(REPO)}:{number}")
    return found


def test_every_affectstream_name_in_deploy_files_is_a_settings_field():
    names = _names_in_deploy_files()
    assert len(names) >= 20, sorted(names)  # the scan really reads the Dockerfiles, compose file and chart
    problems = []
    for name, places in sorted(names.items()):
        if name in SPECIAL_ENV_NAMES:
            continue
        try:
            settings_path(name)
        except LookupError as exc:
            problems.append(f"{exc} (at {', '.join(places)})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS", ("kafka", "bootstrap_servers")),
        ("AFFECTSTREAM_KAFKA__TOPICS__SCORES", ("kafka", "topics", "scores")),
        ("AFFECTSTREAM_INGEST__TOKENS", ("ingest", "tokens")),
        ("AFFECTSTREAM_INGEST__TOKEN", LookupError),  # a typo pydantic-settings would silently ignore
        ("AFFECTSTREAM_KAFKA_BOOTSTRAP_SERVERS", LookupError),  # one underscore: not nested
        ("AFFECTSTREAM_KAFKA", LookupError),  # a section, not a field
        ("AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS__HOST", LookupError),
    ],
)
def test_settings_path_resolves_fields_and_rejects_the_rest(name, expected):
    if expected is LookupError:
        with pytest.raises(LookupError, match=name):
            settings_path(name)
    else:
        assert settings_path(name) == expected


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_environment_builds_valid_settings(dockerfile, settings_from_env):
    env = {k: v for k, v in final_env(dockerfile).items() if k.startswith("AFFECTSTREAM_")}
    settings = settings_from_env(env)
    runtime = stages(dockerfile)[-1]
    exposed = [i["value"] for i in runtime if i["instruction"] == "EXPOSE"]
    assert exposed == [f"{settings.ingest.port}/tcp"]
    assert settings.ingest.host == "0.0.0.0"
    # The configured bundle and rules are where the image puts them.
    copies = [i["value"].split() for i in runtime if i["instruction"] == "COPY"]
    assert ["--from=bundle", "/build/models", "/models"] in copies
    assert all(str(path).startswith("/models/") for path in settings.scoring.bundles)
    assert ["deploy/rules.example.yaml", str(settings.monitor.rules_path)] in copies
    assert (DEPLOY / "rules.example.yaml").is_file()
    if dockerfile.endswith(".cuda"):
        assert settings.scoring.providers[0] == "CUDAExecutionProvider"
        assert settings.scoring.graph_variant == "fp16"
        assert settings.speech.device == "cuda"
    else:
        assert settings.scoring.providers == ["CPUExecutionProvider"]
        assert settings.speech.device == "cpu"


@pytest.mark.parametrize("service", ["agent", "agent-gpu", "monitor"])
def test_compose_environment_builds_valid_settings(service, settings_from_env):
    environment = compose()["services"][service]["environment"]
    env = {k: interpolate(str(v), {"INGEST_TOKENS": "tok-a,tok-b"}) for k, v in environment.items()}
    settings = settings_from_env(env)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    if service.startswith("agent"):
        assert settings.ingest.host == "0.0.0.0"
        assert [t.get_secret_value() for t in settings.ingest.tokens] == ["tok-a", "tok-b"]
    else:
        assert settings.monitor.rules_path == Path("/etc/affectstream/rules.yaml")


def _duration_s(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * units[unit]
    return float(value)


@pytest.mark.parametrize("service", ["agent", "agent-gpu"])
def test_compose_agents_get_time_to_drain(service, settings_from_env):
    spec = compose()["services"][service]
    env = {k: interpolate(str(v), {"INGEST_TOKENS": "tok"}) for k, v in spec["environment"].items()}
    drain = settings_from_env(env).ingest.drain_timeout_s
    # Docker kills after stop_grace_period (10 s by default): the drain and the last windows' publish fit in it.
    assert _duration_s(spec["stop_grace_period"]) >= drain + 30
    assert any(v.endswith(":/var/lib/affectstream") for v in spec["volumes"])  # the spool on a named volume


def test_compose_monitor_health_check_probes_its_own_port(settings_from_env):
    spec = compose()["services"]["monitor"]
    settings = settings_from_env({k: interpolate(str(v), {}) for k, v in spec["environment"].items()})
    assert settings.monitor.host == "0.0.0.0"
    assert f"127.0.0.1:{settings.monitor.port}/healthz" in " ".join(spec["healthcheck"]["test"])
    assert any(mapping.split(":")[-1] == str(settings.monitor.port) for mapping in spec["ports"])


@pytest.mark.parametrize("values_file", ["gpu-values.yaml", "cpu-values.yaml"])
def test_chart_environment_builds_valid_settings(values_file, settings_from_env):
    manifests = render_chart(values_file=values_file)
    secrets = {m["metadata"]["name"]: m.get("stringData", {}) for m in by_kind(manifests, "Secret")}
    if not secrets:  # secrets.existingSecret: stand in for the Secret the operator creates
        secrets = {"affectstream-credentials": {"ingest-tokens": "op-token"}}
    agent_set = agent_workload(manifests)
    agent = pod_spec(agent_set)["containers"][0]
    pod_name = agent_set["metadata"]["name"] + "-0"
    settings = settings_from_env(container_env(manifests, agent, secrets, pod_name))
    assert settings.ingest.host == "0.0.0.0"
    assert [p["containerPort"] for p in agent["ports"] if p["name"] == "http"] == [settings.ingest.port]
    headless = agent_set["spec"]["serviceName"]
    assert settings.ingest.public_url == f"http://{pod_name}.{headless}.affect.svc.cluster.local:{settings.ingest.port}"
    assert pod_spec(agent_set)["terminationGracePeriodSeconds"] > settings.ingest.drain_timeout_s
    if values_file == "cpu-values.yaml":
        assert [t.get_secret_value() for t in settings.ingest.tokens] == ["op-token"]
    if values_file == "gpu-values.yaml":
        assert settings.ingest.token_secret is not None
        assert settings.ingest.token_secret.get_secret_value() == "test-token-secret-0123456789abcdef"
        assert settings.ingest.tokens == []
        assert settings.kafka.security_protocol == "SASL_PLAINTEXT"
        assert settings.kafka.sasl_password is not None
        assert settings.kafka.sasl_password.get_secret_value() == "test-sasl-password"
        assert settings.scoring.max_batch == 32
        assert settings.ingest.ice_servers == ["turn:turn.example.org:3478", "turns:turn.example.org:5349"]
        assert settings.ingest.ice_username == "affectstream"
        assert settings.ingest.ice_credential is not None
        assert settings.ingest.ice_credential.get_secret_value() == "test-turn-credential"
        monitor = pod_spec(monitor_workload(manifests))["containers"][0]
        monitor_settings = settings_from_env(container_env(manifests, monitor, secrets, "monitor-pod"))
        assert monitor_settings.kafka.sasl_username == "affectstream"
        assert monitor_settings.monitor.rules_path == Path("/etc/affectstream/rules.yaml")
        assert [p["containerPort"] for p in monitor["ports"] if p["name"] == "metrics"] == [
            monitor_settings.monitor.port
        ]
        assert monitor_settings.monitor.host == "0.0.0.0"


# --- entrypoint and commands -------------------------------------------------------------------------------


def test_image_entrypoint_is_the_declared_console_script():
    assert console_scripts()["affectstream"] == "cli.main:main"
    for dockerfile in DOCKERFILES:
        runtime = stages(dockerfile)[-1]
        entrypoints = [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"]
        assert entrypoints == ['["affectstream"]'], dockerfile


def _invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `affectstream`) for every command the deploy files run."""
    found: list[tuple[str, list[str]]] = []
    for dockerfile in DOCKERFILES:
        for stage in stages(dockerfile):
            for instruction in stage:
                if instruction["instruction"] == "CMD":
                    found.append((f"{dockerfile} CMD", shlex.split(instruction["value"].strip("[]"))))
                if instruction["instruction"] == "RUN" and "bin/affectstream " in instruction["value"]:
                    argv = shlex.split(instruction["value"].split("bin/affectstream ", 1)[1])
                    found.append((f"{dockerfile} RUN", argv))
    for name, service in compose()["services"].items():
        if "command" in service:
            found.append((f"compose {name}", list(service["command"])))
    for values_file in ("gpu-values.yaml", "cpu-values.yaml"):
        for workload in workloads(render_chart(values_file=values_file)):
            for container in pod_spec(workload)["containers"]:
                found.append((f"chart {workload['metadata']['name']}", list(container["args"])))
    return [(where, [arg.strip('",') for arg in argv]) for where, argv in found]


def test_deploy_files_run_serve_and_monitor():
    commands = {argv[0] for _where, argv in _invocations()}
    assert {"serve", "monitor", "model"} <= commands


@pytest.mark.parametrize(("where", "argv"), [pytest.param(w, a, id=f"{w}: {' '.join(a)}") for w, a in _invocations()])
def test_deployed_commands_are_real_cli_commands(where, argv):
    group = cli_group()
    command = group.commands.get(argv[0])
    assert command is not None, f"{where}: `affectstream {argv[0]}` is not a CLI command"
    args = argv[1:]
    while args and not args[0].startswith("-"):
        assert hasattr(command, "commands"), f"{where}: `{' '.join(argv)}`: {argv[0]} takes no subcommand"
        sub = command.commands.get(args[0])
        assert sub is not None, f"{where}: `{' '.join(argv)}`: no subcommand {args[0]!r}"
        command, args = sub, args[1:]
    options = {opt for param in command.params for opt in param.opts}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"{where}: `{' '.join(argv)}`: no option {arg}"
