"""Will a GGUF model fit, and with how much context: the memory llama.cpp will take for it, from
the file's header alone (nothing is loaded), against the memory free now.

Sizes as llama.cpp allocates them on the CPU: the weights (the file, mapped); the KV cache, per
token the K and V rows of every layer (key/value length × KV heads, in the cache's types;
llama-cpp-python keeps sliding-window layers at full size too); the compute buffer, whose
largest part is the logits of one micro-batch (vocabulary × min(512, context) floats); the
vision projector when one is found."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import VllamaError
from ..sizes import size_text
from .gguf import CACHE_TYPES, _arch, trained_context

MARGIN = 0.8        # a plan fits when it needs at most this share of the free memory
UBATCH = 512        # llama.cpp's micro-batch: the logits rows of the compute buffer
COMPUTE_EXTRA = 8 * 2**20   # the compute buffer's activations, besides the logits (a few MiB)
# bytes per element of a KV cache type (llama.cpp's type numbers, as in gguf.CACHE_TYPES)
ELEMENT = {0: 4.0, 1: 2.0, 30: 2.0, 8: 34 / 32, 2: 18 / 32, 3: 20 / 32, 6: 22 / 32, 7: 24 / 32, 20: 18 / 32}
TYPE_NAMES = {n: name for name, n in CACHE_TYPES.items()}


@dataclass(frozen=True)
class Plan:
    model: str
    n_ctx: int
    trained: int             # the context the model was trained on
    weights: int             # bytes
    kv_per_token: int        # bytes: K and V of every layer for one position
    kv_types: str            # e.g. "f16"
    vocab: int               # tokens: the compute buffer's logits rows are this long
    projector: int           # bytes (0: none)
    free: int                # bytes of memory available now
    where: str = "RAM"

    @property
    def compute(self) -> int:
        """The compute buffer (an estimate): one micro-batch of logits, and the activations."""
        return COMPUTE_EXTRA + self.vocab * 4 * min(self.n_ctx, UBATCH)

    @property
    def kv(self) -> int:
        return self.kv_per_token * self.n_ctx

    @property
    def need(self) -> int:
        return self.weights + self.kv + self.compute + self.projector

    @property
    def fits(self) -> bool:
        return self.need <= MARGIN * self.free

    @property
    def largest_context(self) -> int:
        """The largest context that fits with the margin (0: none does); it may pass the trained one."""
        room = MARGIN * self.free - self.weights - self.projector - COMPUTE_EXTRA - self.vocab * 4 * UBATCH
        return max(0, int(room // self.kv_per_token)) if self.kv_per_token else 0

    def line(self, trained: bool = True) -> str:
        verdict = "fits" if self.fits else "does not fit"
        parts = [f"weights {size_text(self.weights)}",
                 f"KV cache {self.n_ctx:,} tokens × {size_text(self.kv_per_token)} ({self.kv_types}) = {size_text(self.kv)}",
                 f"compute ~{size_text(self.compute)}"] + ([f"projector {size_text(self.projector)}"] if self.projector else [])
        return (f"{self.model}: {' + '.join(parts)} = {size_text(self.need)} of {size_text(self.free)} free {self.where}: "
                f"{verdict}; the largest context that fits is {self.largest_context:,} tokens"
                + (f" (trained on {self.trained:,})" if trained else ""))

    def brief(self) -> str:
        """'253.1 MiB: fits, up to 32,768 tokens of context (trained on 32,768)', for a list of models."""
        return (f"{size_text(self.weights)}: {'fits' if self.fits else 'does not fit'}, "
                f"up to {self.largest_context:,} tokens of context (trained on {self.trained:,})")

    def refusal(self) -> str:
        return f"{self.line(trained=False)}; use a smaller n_ctx (the model was trained on {self.trained:,})"

    def __str__(self) -> str:
        return self.line()

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(self.line())


def plan(path: Path, meta: dict, n_ctx: int | None = None, options: dict | None = None, name: str = "") -> Plan:
    """The memory plan for loading the GGUF at `path` (header `meta`) with `n_ctx` (default: the
    context a load would take) and the load `options` (type_k, type_v, mmproj)."""
    from .vision import find_projector

    options = options or {}
    found = find_projector(path, options.get("mmproj"))
    return plan_of(meta, path.stat().st_size, found.stat().st_size if found is not None else 0, n_ctx, options,
                   name or path.name)


def plan_of(meta: dict, weights: int, projector: int, n_ctx: int | None, options: dict | None, name: str) -> Plan:
    """The plan for a GGUF model whose header is `meta`, its files (weights, projector) of these sizes."""
    import psutil

    options = options or {}
    trained = trained_context(meta)
    n_ctx = n_ctx or min(trained, 8192)
    type_k, type_v = options.get("type_k") or 1, options.get("type_v") or 1
    kv_k, kv_v = _kv_row(meta)
    per_token = int(round(kv_k * ELEMENT.get(type_k, 2.0) + kv_v * ELEMENT.get(type_v, 2.0)))
    vocab = meta.get("tokenizer.ggml.tokens") or meta.get(f"{_arch(meta)}.vocab_size") or 32000
    kinds = {TYPE_NAMES.get(type_k, str(type_k)), TYPE_NAMES.get(type_v, str(type_v))}
    return Plan(name, n_ctx, trained, weights, per_token, "/".join(sorted(kinds)), vocab, projector,
                psutil.virtual_memory().available)


def check(path: Path, meta: dict, n_ctx: int, options: dict | None = None) -> None:
    """One line, with the plan, when the model and its context would not fit."""
    p = plan(path, meta, n_ctx, options)
    if not p.fits:
        raise VllamaError(p.refusal())


def _kv_row(meta: dict) -> tuple[int, int]:
    """Elements of K and of V that one position holds, summed over the layers."""
    a = _arch(meta)
    layers = meta.get(f"{a}.block_count", 32)
    embd = meta.get(f"{a}.embedding_length", 4096)
    heads = meta.get(f"{a}.attention.head_count", 32) or 1
    kv_heads = meta.get(f"{a}.attention.head_count_kv", heads) or heads
    k_len = meta.get(f"{a}.attention.key_length", embd // heads)
    v_len = meta.get(f"{a}.attention.value_length", embd // heads)
    return layers * k_len * kv_heads, layers * v_len * kv_heads
