"""Shared by the deploy tests: the files under deploy/, settings resolution, the CLI, the rendered chart."""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path
from typing import Any

import typer.main
import yaml
from dockerfile_parse import DockerfileParser
from pydantic import BaseModel

from agent.settings import Settings
from cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "affectstream"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
ENV_NAME = re.compile(r"\bAFFECTSTREAM_[A-Z0-9_]*[A-Z0-9]\b")
# Read by Settings.settings_customise_sources rather than being a field.
SPECIAL_ENV_NAMES = {"AFFECTSTREAM_CONFIG"}


def settings_path(env_name: str) -> tuple[str, ...]:
    """The settings field an AFFECTSTREAM_* name sets, e.g. ('kafka', 'topics', 'scores')."""
    if not env_name.startswith("AFFECTSTREAM_"):
        raise LookupError(f"{env_name}: not an AFFECTSTREAM_ name")
    parts = env_name.removeprefix("AFFECTSTREAM_").lower().split("__")
    model: type[BaseModel] | None = Settings
    for depth, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            where = ".".join(parts[:depth]) or "Settings"
            raise LookupError(f"{env_name}: {where} has no field {part!r}")
        annotation = model.model_fields[part].annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
    if model is not None:
        raise LookupError(f"{env_name}: names the section {'.'.join(parts)}, not a field")
    return tuple(parts)


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def stages(dockerfile: str) -> list[list[dict[str, Any]]]:
    """The instructions of each build stage (comments dropped), in order."""
    parser = _parser(dockerfile)
    result: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            result.append([])
        if result and instruction["instruction"] != "COMMENT":
            result[-1].append(instruction)
    return result


def final_env(dockerfile: str) -> dict[str, str]:
    """The ENV of the final stage, quotes removed, as the parser resolves them."""
    return dict(_parser(dockerfile).envs)


def _parser(dockerfile: str) -> DockerfileParser:
    # A file object: given a path, the parser takes any name not ending in "Dockerfile" for a directory.
    return DockerfileParser(fileobj=io.BytesIO((DEPLOY / dockerfile).read_bytes()))


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?message} against `given`."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if name in given:
            return given[name]
        if op == "-":
            return arg
        if op == "?":
            raise KeyError(f"{name} is required: {arg}")
        return ""

    return _INTERPOLATION.sub(substitute, value)


def cli_group() -> Any:
    """The click group behind the typer app (typer may ship its own click, so no isinstance check)."""
    group = typer.main.get_command(cli_main.app)
    assert hasattr(group, "commands")
    return group


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def render_chart(values: dict[str, Any] | None = None, values_file: str | None = None) -> list[dict[str, Any]]:
    """Render the chart with Helm (the real Helm SDK, offline) and return its manifests."""
    import helm_python as helm

    merged: dict[str, Any] = {}
    if values_file:
        merged = yaml.safe_load((CHART / "ci" / values_file).read_text())
    merged = _deep_merge(merged, values or {})
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(merged, name="calls", namespace="affect")
    manifests = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
    return found[0]


def workloads(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifests that run pods: the agent's StatefulSet and the monitor's Deployment."""
    return [m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")]


def agent_workload(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return one(manifests, "StatefulSet", "-agent")


def monitor_workload(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return one(manifests, "Deployment", "-monitor")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


_DEPENDENT_VAR = re.compile(r"\$\((\w+)\)")


def container_env(
    manifests: list[dict[str, Any]], container: dict[str, Any], secrets: dict[str, dict[str, str]], pod_name: str
) -> dict[str, str]:
    """A container's environment as Kubernetes would give it: ConfigMaps from envFrom, then env entries (Secret
    keys, the downward API's pod name, `$(VAR)` of earlier entries expanded)."""
    configmaps = {m["metadata"]["name"]: m.get("data", {}) for m in by_kind(manifests, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = _DEPENDENT_VAR.sub(lambda m: env.get(m[1], m[0]), entry["value"])
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", entry
            env[entry["name"]] = pod_name
            continue
        ref = source["secretKeyRef"]
        data = secrets.get(ref["name"], {})
        if ref["key"] in data:
            env[entry["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{entry['name']}: key {ref['key']} missing from Secret {ref['name']}"
    return env
