#!/usr/bin/env bash
# Creates .venv with the package, the Triton server (pytriton wheel), tritonclient and perf_analyzer.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! ldconfig -p | grep -q libb64.so.0d; then
    # perf_analyzer links libb64; the Python-backend stub embeds the system libpython3.11.
    (apt-get update -qq && apt-get install -y -qq libb64-0d libpython3.11 >/dev/null) || echo "setup: apt-get failed; perf_analyzer may not run"
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[serve,dev]"
# Type stubs of TensorRT's Python API for the engine builder's mypy check; --no-deps because their declared
# dependency is the real TensorRT, which installs only from NVIDIA's own index.
.venv/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
# PaddlePaddle and PaddleOCR's published pre/post-processing are the fidelity references of
# tests/test_paddle_fidelity.py. paddleocr goes in without its dependencies: only three of its modules are
# imported (see tests/paddle_reference/ppocr_wheel.py), and shapely is the one they need.
.venv/bin/python -m pip install -q "paddlepaddle==3.3.1" "shapely==2.2.0"
.venv/bin/python -m pip install -q --no-deps "paddleocr==2.7.3"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
