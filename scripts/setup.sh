#!/usr/bin/env bash
# Creates .venv with the package, the Triton server (pytriton wheel), tritonclient and perf_analyzer.
# --dev adds the perf tooling and what the tests need: pytest, PaddlePaddle and PaddleOCR's pre/post-processing (fidelity
# references), onnxruntime-extensions, mypy and TensorRT's type stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=false
[ "${1:-}" = "--dev" ] && dev=true
# perf_analyzer links libb64; the Python-backend stub embeds the system libpython3.11.
if ! ldconfig -p | grep -q libb64.so.0d || ! ldconfig -p | grep -q libpython3.11.so.1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq libb64-0d libpython3.11 >/dev/null) || echo "setup: apt-get failed"
    else
        echo "setup: install libb64-0d and libpython3.11 (Debian packages) for perf_analyzer and the Triton Python backend"
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! $dev; then
    .venv/bin/python -m pip install -q -e ".[serve]"
else
    .venv/bin/python -m pip install -q -e ".[serve,perf,dev]"
    # --no-deps: the stubs' declared dependency is the real TensorRT, which installs only from NVIDIA's index.
    .venv/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
    # PaddleOCR's published pre/post-processing is a test reference; only three of its modules are imported
    # (tests/paddle_reference/ppocr_wheel.py), so it goes in without its dependencies but shapely.
    .venv/bin/python -m pip install -q "paddlepaddle==3.3.1" "shapely==2.2.0"
    .venv/bin/python -m pip install -q --no-deps "paddleocr==2.7.3"
    touch .venv/.spinrec-dev
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
