#!/usr/bin/env bash
# The checks that need a GPU (and TensorRT), run by hand where they exist; CI machines skip them.
#
#   scripts/gpu_check.sh                 # CUDA kernel vs PyTorch (needs torch with CUDA, nvcc), CuPy decoder vs NumPy, training on CUDA
#   TENSORRT_ROOT=/usr scripts/gpu_check.sh   # + plugin build, plugin-only and encoder engines (TensorRT)
#
# Uses .venv's Python when there is one, else python3 (e.g. inside NVIDIA's TensorRT container after
# `pip install -e .[dev]`). Every selected test must run: a skip is a failure here, since it would hide a
# missing prerequisite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

"$python" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check: PyTorch sees no CUDA GPU"
print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY

"$python" -c "import cupy" 2>/dev/null || { echo "gpu_check: CuPy missing (pip install -e .[gpu]) - the GPU decoder check needs it" >&2; exit 1; }

tests=(tests/test_plugin_kernel.py tests/test_serving_stages.py tests/test_train.py tests/test_perf_tools.py)
marks="gpu"
if [ -n "${TENSORRT_ROOT:-}" ] || [ -f /usr/include/x86_64-linux-gnu/NvInfer.h ] || [ -f /usr/include/NvInfer.h ]; then
    tests+=(tests/test_plugin_build.py tests/test_engine_build.py)
    marks="gpu or tensorrt"
else
    echo "gpu_check: TensorRT headers not found (set TENSORRT_ROOT): kernel checks only" >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$python" -m pytest -q -rs -m "$marks" "${tests[@]}" "$@" | tee "$log"
if grep -q "SKIPPED" "$log"; then
    echo "gpu_check: FAILED - tests were skipped (see the reasons above)" >&2
    exit 1
fi
echo "gpu_check: all GPU checks passed"
