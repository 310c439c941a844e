"""The GPU serving environment without the CPU `onnxruntime` (used by scripts/install-gpu.sh; stdlib only).

faster-whisper requires `onnxruntime`, and `onnxruntime-gpu` installs into the same package folder: installing
both leaves whichever came last, and uninstalling either breaks the other. So the GPU environment is planned,
not left to the resolver:

  plan    pip's resolver, without installing (`pip install --dry-run --report`), resolves `PROJECT[gpu]` against
          the constraints; the CPU `onnxruntime` is dropped from the result; every requirement of what is left
          must still be met, `onnxruntime` by `onnxruntime-gpu` (same import package, same version line); the
          pins are written as a requirements file that install-gpu.sh installs with --no-deps.
  verify  in the installed environment: the onnxruntime-gpu distribution is there, onnxruntime is not, and
          `import onnxruntime` offers the CUDA provider (a GPU is not needed to see that).

Usage: python gpu_plan.py plan PROJECT_DIR CONSTRAINTS OUT [PIP_ARGS...]
       python gpu_plan.py verify
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv (the CUDA image's, before anything is installed): pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement

CPU, GPU = "onnxruntime", "onnxruntime-gpu"
PROJECT = "affectstream"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(project: Path, constraints: Path, pip_args: list[str]) -> list[dict]:
    """pip's dry-run report of `project[gpu]` against `constraints`, as if nothing were installed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--report", str(report), "-c", str(constraints), *pip_args,
                   f"{project}[gpu]"]
        subprocess.run(command, check=True)
        return list(json.loads(report.read_text())["install"])


def plan(items: list[dict]) -> dict[str, str]:
    """{name: version} of the GPU environment (the project included), or SystemExit saying what is unmet."""
    found = {canonical(i["metadata"]["name"]): i for i in items}
    if GPU not in found:
        raise SystemExit(f"{GPU} is not in the resolved environment: is the gpu extra still in pyproject.toml?")
    found.pop(CPU, None)
    versions = {name: item["metadata"]["version"] for name, item in found.items()}
    unmet = []
    for name, item in found.items():
        environments = [{"extra": e} for e in item.get("requested_extras") or []] or [{"extra": ""}]
        for line in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(line)
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            wanted = canonical(requirement.name)
            have = GPU if wanted == CPU else wanted
            if have not in versions:
                unmet.append(f"{name} requires {line}: not in the plan")
            elif not requirement.specifier.contains(versions[have], prereleases=True):
                unmet.append(f"{name} requires {line}: the plan has {have} {versions[have]}")
    if unmet:
        raise SystemExit("\n".join(unmet))
    return versions


def write_requirements(versions: dict[str, str], out: Path) -> None:
    pins = [f"{name}=={version}" for name, version in sorted(versions.items()) if name != PROJECT]
    out.write_text("\n".join(pins) + "\n")


def verify() -> None:
    names = {canonical(d.metadata["Name"]) for d in metadata.distributions()}
    if CPU in names or GPU not in names:
        raise SystemExit(f"expected {GPU} alone, found: {sorted(names & {CPU, GPU})}")
    import onnxruntime  # the package the GPU wheel installs

    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise SystemExit(f"onnxruntime offers no CUDA provider: {providers}")
    print(f"{GPU} {metadata.version(GPU)} alone; providers: {', '.join(providers)}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["verify"]:
        verify()
    elif argv[:1] == ["plan"] and len(argv) >= 4:
        project, constraints, out = Path(argv[1]), Path(argv[2]), Path(argv[3])
        versions = plan(resolve(project, constraints, argv[4:]))
        write_requirements(versions, out)
        print(f"{len(versions) - 1} packages planned; {GPU} {versions[GPU]}, no {CPU}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
