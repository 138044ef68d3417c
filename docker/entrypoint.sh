#!/usr/bin/env bash
# The image's start: builders/gpu_start.py builds what is missing or stale in $SPIN_MODELS (model repository,
# the encoder graph that fits the checkpoint, the TensorRT engine for this GPU), then execs tritonserver.
# Extra arguments go to tritonserver.
set -euo pipefail
cd /opt/spin/src
exec python3 -m builders.gpu_start "$@"
