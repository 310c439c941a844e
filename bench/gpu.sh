#!/usr/bin/env bash
# GPU measurements in one short run ON a lent GPU machine (it has no network: nothing is installed from it).
#
#   here, once:   bench/gpu_prepare.sh                   (puts the ctranslate2 wheel + Whisper layout in .whl/gpu)
#   device run:   command "bash bench/gpu.sh", carry [".whl/gpu"], timeout_s 540
#   afterwards:   copy the returned files into bench/results/gpu/; `bench/run_all.py` includes them
#
# Runs bench/gpu_check.py --random-minilm (ONNX Runtime's CUDA provider, fp16, batch 1..64: it exits at once
# with a message when this onnxruntime has no CUDA provider) and bench/gpu_bench.py (PyTorch CUDA fp32/fp16 vs
# CPU batch sweep, ONNX Runtime on whatever providers exist, Whisper tiny.en through CTranslate2 on CUDA float16
# vs CPU int8 with N windows one by one vs batched, N streams' latency). Writes under $OUT (else
# bench/results/gpu/): gpu.log, gpu_bench.json, gpu_check.json. Stays within GPU_BUDGET_S (default 480 s).
# Both run as modules (`python -m bench.<name>`) from the repository root, so the checkout's packages import
# without an install (the device gets the working tree, not the venv).
# A dry run without a GPU: OUT=/tmp/g PYTHON=.venv/bin/python GPU_BENCH_ARGS=--quick bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
exec > >(tee "$out/gpu.log") 2>&1
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
budget_s=${GPU_BUDGET_S:-480}
started=$(date +%s)
left() { echo $(( budget_s - ($(date +%s) - started) )); }

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi failed"
$py -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== carried wheels"
if compgen -G ".whl/gpu/*.whl" >/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site \
    .whl/gpu/*.whl && export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no wheels in .whl/gpu: run bench/gpu_prepare.sh here and carry .whl/gpu (the Whisper section needs them)"
fi

# CTranslate2's CUDA build dlopens libcublas.so.12 / libcublasLt.so.12 and libcudnn.so.9. Where only a newer
# cuBLAS exists (a CUDA 13 image), alias it under the CUDA 12 name; the log says so (not a supported setup).
libs=/tmp/gpu-cuda-libs
mkdir -p "$libs"
search=$($py -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null)
search="$search /usr/local/cuda /usr/lib/x86_64-linux-gnu"
for lib in libcublas libcublasLt; do
  exact=$(find $search -name "$lib.so.12*" 2>/dev/null | head -1)
  newer=$(find $search -name "$lib.so.1[3-9]*" 2>/dev/null | head -1)
  if [ -n "$exact" ]; then
    ln -sf "$exact" "$libs/$lib.so.12"
  elif [ -n "$newer" ]; then
    ln -sf "$newer" "$libs/$lib.so.12"
    echo "alias: $lib.so.12 -> $newer (no CUDA 12 cuBLAS here: not a supported configuration)"
  fi
done
cudnn=$(find $search -name "libcudnn.so.9*" 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$libs${cudnn:+:$(dirname "$cudnn")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

echo "== gpu_check (ONNX Runtime CUDA provider)"
if [ -f bench/gpu_check.py ]; then
  rm -f bench/results/gpu_check.json
  timeout $(( $(left) < 150 ? $(left) / 3 : 150 )) $py -m bench.gpu_check --random-minilm
  status=$?
  echo "gpu_check exit $status"
  [ $status -eq 0 ] && cp bench/results/gpu_check.json "$out/"
else
  echo "bench/gpu_check.py missing"
fi

echo "== gpu_bench"
timeout $(( $(left) - 5 )) $py -m bench.gpu_bench --out "$out/gpu_bench.json" ${GPU_BENCH_ARGS:-}
echo "gpu_bench exit $? after $(( $(date +%s) - started )) s"
