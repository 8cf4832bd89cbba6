#!/usr/bin/env bash
# Create .venv and install vllama-jupyter with the llama.cpp engine, widgets and test tools.
# llama-cpp-python compiles from source the first time (~10 min on 2 cores); pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[llamacpp,openai,widgets,lab,test]"
