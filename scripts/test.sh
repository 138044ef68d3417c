#!/usr/bin/env bash
# The test suite (README's second command); sets up .venv with the test dependencies first if needed.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/.spinrec-dev ] || bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q -ra "$@"
