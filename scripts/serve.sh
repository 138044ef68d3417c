#!/usr/bin/env bash
# Sets up .venv if needed, builds the model repository if needed, and serves it on CPU
# (HTTP 127.0.0.1:8000, gRPC :8001, metrics :8002). Extra arguments go to the launcher
# (see `.venv/bin/python -m spinrec.serving.launch --help`), which passes the builder's options on
# (e.g. `--weights W.safetensors --max-error 2e-4 --noise-factor 3`), unknown ones on to tritonserver.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c "import spinrec, pytriton, tritonclient" 2>/dev/null || bash scripts/setup.sh
exec .venv/bin/python -m spinrec.serving.launch "$@"
