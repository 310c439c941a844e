#!/usr/bin/env bash
# The GPU serving environment: affectstream with onnxruntime-gpu alone (no CPU onnxruntime), every package pinned
# by constraints.txt. Usage: scripts/install-gpu.sh VENV_PYTHON   (deploy/Dockerfile.cuda; or any venv of yours)
# faster-whisper requires the CPU onnxruntime, which shares its package folder with onnxruntime-gpu, so the
# environment is planned with pip's resolver (scripts/gpu_plan.py: resolve, drop onnxruntime, check that every
# requirement is still met) and installed with --no-deps; then checked. tests/deploy/test_install_profiles.py
# runs the same plan.
set -euo pipefail
python="${1:?usage: scripts/install-gpu.sh VENV_PYTHON}"
root="$(cd "$(dirname "$0")/.." && pwd)"
plan="$(mktemp -d)"
trap 'rm -rf "$plan"' EXIT
pip=("$python" -m pip install --disable-pip-version-check -c "$root/constraints.txt")
# the plan needs pip's --dry-run --report (pip >= 23): the pinned pip
"${pip[@]}" --upgrade pip
"$python" "$root/scripts/gpu_plan.py" plan "$root" "$root/constraints.txt" "$plan/requirements.txt"
"${pip[@]}" --no-deps -r "$plan/requirements.txt"
"${pip[@]}" --no-deps "$root"
"$python" "$root/scripts/gpu_plan.py" verify
