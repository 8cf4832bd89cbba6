#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: real engines on the embedded model, a real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser tests drive JupyterLab in Debian's Chromium (Playwright cannot download its own here).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
