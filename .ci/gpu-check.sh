#!/usr/bin/env bash
# For the next person with an NVIDIA GPU and TensorRT: everything of the TensorRT path that no machine of this
# project could run (no GPU, NVIDIA's package index unreachable), in one go. Run from the repository root:
#   bash .ci/gpu-check.sh            # fresh venv in .venv-gpu
# Needs: NVIDIA driver, Python >= 3.10, and NVIDIA's package index reachable (the tensorrt-cu13 package on PyPI
# fetches its wheels from there at install time). pycuda builds from source against the CUDA toolkit's headers;
# where it cannot, the script goes on with cuda-python, the runner's fallback.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ALLSCAN_GPU_VENV:-.venv-gpu}"
PYTHON="${PYTHON:-python3}"
OUT="${ALLSCAN_GPU_OUT:-gpu-check-results}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
if ! python -m pip install -e '.[gpu,test]'; then
    echo "gpu-check: '.[gpu]' failed (pycuda needs the CUDA toolkit to build); installing without pycuda"
    python -m pip install -e '.[test]' tensorrt-cu13 cuda-python onnx onnxconverter-common
fi
python -m pip install --quiet --no-deps tensorrt-stubs || true
mkdir -p "$OUT"

set -x
nvidia-smi | tee "$OUT/nvidia-smi.txt"
allscan doctor | tee "$OUT/doctor-before.txt"
# Unit tests, then the GPU tests (real engine build of the tiny model, pycuda and cuda-python buffers).
python -m pytest -q tests/test_engines.py tests/test_fp16.py tests/test_trt_static.py
python -m pytest -q -rs -m gpu tests/test_engines_gpu.py | tee "$OUT/gpu-tests.txt"
allscan build-engine --all | tee "$OUT/build-engine.txt"
cat engines/*/trt/*.json > "$OUT/sidecars.json"
allscan doctor | tee "$OUT/doctor-after.txt"
allscan models | tee "$OUT/models.txt"
allscan bench --backend tensorrt | tee "$OUT/bench-tensorrt.txt"
# The same images through both backends: the tables must agree (labels; probabilities within the parity gate).
allscan run sample_images --backend tensorrt --out "$OUT/run-tensorrt"
allscan run sample_images --backend onnxruntime --out "$OUT/run-onnxruntime"
set +x
echo "gpu-check: done; send $OUT/ back (doctor, sidecars with parity numbers, bench, both runs)"
