"""Which engine to use on this machine, and why (in words).

Order of precedence: the `engine` argument, then the VLLAMA_ENGINE environment variable, then
`%config VllamaMagics.engine`, then hardware detection.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

from . import check_name, install_advice
from . import installed as installed_engines
from ..errors import VllamaError
from ..hardware import Hardware


@dataclass(frozen=True)
class Choice:
    engine: str
    reason: str
    advice: str = ""   # how to get a better engine, when there is one

    def __str__(self) -> str:
        return self.reason + (f" ({self.advice})" if self.advice else "")


def choose(hw: Hardware | Callable[[], Hardware], installed: Iterable[str] | None = None,
           override: str | None = None, config: str | None = None) -> Choice:
    """Pick the engine from hardware facts, installed engines and an override. `hw` may be the
    function that finds the facts: it is called only when the choice needs them."""
    facts = hw if callable(hw) else (lambda: hw)
    have = set(installed_engines() if installed is None else installed)
    for source, value in (("argument", override), ("VLLAMA_ENGINE", os.environ.get("VLLAMA_ENGINE")),
                          ("config", config)):
        if value and value.strip().lower() != "auto":
            name = check_name(value)
            if name not in have:
                raise VllamaError(f"engine {name!r} was asked for ({source}) but is not installed: "
                                  f"{install_advice(name)}")
            reason = f"{name} asked for ({source})"
            if name == "vllm" and not (facts().nvidia or facts().rocm):
                reason += "; no GPU found, so vLLM runs on the CPU"
            return Choice(name, reason)
    return _auto(facts(), have)


def _auto(hw: Hardware, have: set[str]) -> Choice:
    gpu_host = hw.os in ("linux", "windows") and (hw.nvidia or hw.rocm)
    if gpu_host:
        found = (", ".join(g.describe() for g in hw.gpus) + f" found via {hw.gpu_source}"
                 if hw.nvidia else "AMD ROCm found")
        if "vllm" in have:
            return Choice("vllm", f"{found} and vllm is installed -> vllm")
        if "llamacpp" in have:
            return Choice("llamacpp", f"{found} but vllm is not installed -> llamacpp",
                          advice=f"for vLLM: {install_advice('vllm')}")
        raise VllamaError(f"{found} but no local engine is installed: {install_advice('vllm')}")
    if hw.os == "darwin" and hw.apple_silicon:
        where = "Apple Silicon found"
        if hw.rosetta:
            where += " (Python under Rosetta: Metal needs an arm64 Python)"
        label = f"{where} -> llamacpp (Metal)"
    else:
        label = "no NVIDIA or ROCm GPU found -> llamacpp on CPU"
    if "llamacpp" in have:
        note = "; vllm is installed and runs on CPU only when asked (engine='vllm')" if "vllm" in have else ""
        return Choice("llamacpp", label + note)
    if "vllm" in have:
        raise VllamaError(f"{label}, but llama-cpp-python is not installed: {install_advice('llamacpp')} "
                          "(or ask for vLLM on CPU with engine='vllm')")
    raise VllamaError(f"{label}, but no local engine is installed: {install_advice('llamacpp')}")
