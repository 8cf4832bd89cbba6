"""The adapters of a llama.cpp engine: loaded into the model once (llama_adapter_lora_init), set on
the context for each request that names one, and cleared for one that names none. A request with
an adapter runs in the one-sequence loop, in turn with the others (the batch context has no
adapters); the KV cache of a conversation is re-used only by a request with the same adapter."""
from __future__ import annotations

import ctypes

from ..errors import VllamaError
from ..models import EMBEDDED_DIR
from .gguf import last_error, logs, route_logs
from .lora import Adapter, check_name, prepare


def prepare_for(ref, path, name=None, scale=1.0) -> Adapter:
    """An adapter for the model `ref`, checked and converted (the embedded model's HF form is the
    base a PEFT adapter trained on it names)."""
    return prepare(path, name, scale, EMBEDDED_DIR / "hf" if ref is not None and ref.source == "embedded" else None)


class Adapters:
    def __init__(self, eng):
        self.eng = eng
        self.added: dict[str, Adapter] = {}
        self._loaded: dict[str, int] = {}   # name -> the llama_adapter_lora pointer
        self._in_cache = None   # the Adapter (None: the base model) the loop context's KV cache was made with

    def prepare(self, path, name=None, scale=1.0) -> Adapter:
        """Checks and conversion, nothing loaded: an adapter that cannot be added is refused here."""
        a = prepare_for(self.eng.ref, path, name, scale)
        if a.name in self.added:
            raise VllamaError(f"an adapter named {a.name!r} is added already: remove it first (v.lora.remove"
                              f"({a.name!r})) or give another name")
        return a

    def add(self, a: Adapter) -> None:
        import llama_cpp

        eng = self.eng
        route_logs()
        logs.clear()
        ptr = eng._worker.call(lambda: llama_cpp.llama_adapter_lora_init(eng.llm.model, str(a.path).encode()))
        if not ptr:
            raise VllamaError(f"llama.cpp cannot apply the adapter {a.name!r} to {eng.model_name}: {last_error()}")
        self.added[a.name], self._loaded[a.name] = a, ptr

    def remove(self, name) -> Adapter:
        import llama_cpp

        name = check_name(name)
        if name not in self.added:
            raise VllamaError(f"no adapter named {name!r} (added: {', '.join(self.added) or 'none'})")
        eng = self.eng
        ptr = self._loaded.pop(name)

        def free():
            llama_cpp.llama_set_adapters_lora(eng.llm._ctx.ctx, None, 0, None)
            llama_cpp.llama_adapter_lora_free(ptr)
        eng._worker.call(free)
        self._in_cache = False   # made with an adapter that is gone, or cleared above: re-used by none
        return self.added.pop(name)

    def use(self, name: str | None) -> bool:
        """Set the loop context's adapter for a request (on the worker thread); whether its KV cache
        was made with the same one (a conversation's earlier turns may then be re-used)."""
        import llama_cpp

        ctx = self.eng.llm._ctx.ctx
        if name is None and self._in_cache is None:
            return True   # never set: nothing to clear
        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            ptrs = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loaded[name])
            rc = llama_cpp.llama_set_adapters_lora(ctx, ptrs, 1, (ctypes.c_float * 1)(self.added[name].scale))
        if rc:
            raise VllamaError(f"llama.cpp could not set the adapter {name!r} on the context ({rc})")
        adapter = self.added.get(name) if name else None
        same, self._in_cache = self._in_cache == adapter, adapter
        return same

    def records(self) -> list[dict]:
        return [a.record() for a in self.added.values()]


def lora_spec(given) -> dict:
    """A load's lora={name: path or (path, scale)} as {name: (path, scale)}; one line when it is not."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise VllamaError(f"lora must be a dict of adapters, {{name: path}} (got {type(given).__name__})")
    out = {}
    for name, spec in given.items():
        path, scale = (spec, 1.0) if not isinstance(spec, (tuple, list)) else (tuple(spec) + (1.0,))[:2]
        out[name] = (path, scale)
    return out
