#!/usr/bin/env bash
# Set up what this machine's main engine needs, stream a prompt from the embedded model in the
# terminal, then execute the quickstart notebook (streamed %%vllama cells) into OUT (default out/).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
bash scripts/setup.sh quickstart
echo "== streaming from the embedded model (terminal) =="
.venv/bin/vllama "ROMEO:" --max-tokens 120 --seed 7
echo
echo "== executing notebooks/01_quickstart.ipynb =="
mkdir -p "$out"
.venv/bin/python scripts/run_notebook.py notebooks/01_quickstart.ipynb "$out/01_quickstart.ipynb"
.venv/bin/python scripts/show_notebook.py "$out/01_quickstart.ipynb"
echo
echo "Executed notebook: $out/01_quickstart.ipynb — open it live with: .venv/bin/jupyter lab notebooks/01_quickstart.ipynb"
