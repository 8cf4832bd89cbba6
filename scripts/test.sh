#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: real engines on the embedded model, a real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
