"""Will a model fit on vLLM, and with what max_model_len: the plan from config.json and the size of
the weights, nothing loaded.

vLLM gives its KV cache a fixed room and cuts it into blocks of `block_size` tokens, each token
the K and V rows of every layer (KV heads × head size, in the cache's dtype). On a CPU host the
room is VLLM_CPU_KVCACHE_SPACE (cpu_kv_cache_gb) GiB, in RAM beside the weights. On an NVIDIA
card it is gpu_memory_utilization of the card less the weights and the activations' peak (vLLM
measures that peak at start; here it is estimated as gpu_memory.model_need does). A load fits
when the memory holds it and the room holds one sequence of max_model_len tokens."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import VllamaError
from ..sizes import size_text
from .fit import MARGIN
from .gpu_memory import CAP, Card, margin, model_need

BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
BLOCK = {"cpu": 128, "gpu": 16}   # vLLM's default block_size on its CPU platform and on CUDA


@dataclass(frozen=True)
class VllmPlan:
    model: str
    max_model_len: int
    trained: int            # max_position_embeddings
    weights: int            # bytes
    kv_per_token: int       # bytes: K and V of every layer for one position
    dtype: str              # the KV cache's
    room: int               # bytes vLLM gives the KV cache
    block_size: int
    need: int               # bytes of RAM (CPU) or of the card (GPU) the load takes
    free: int               # bytes free there now
    where: str              # "RAM" or "GPU 0"

    @property
    def tokens(self) -> int:
        """How many tokens the KV cache holds: whole blocks."""
        per_block = self.block_size * self.kv_per_token
        return max(0, self.room) // per_block * self.block_size if per_block else 0

    @property
    def memory_fits(self) -> bool:
        return self.room > 0 and self.need <= (MARGIN * self.free if self.where == "RAM" else self.free)

    @property
    def fits(self) -> bool:
        return self.memory_fits and self.max_model_len <= self.largest_context

    @property
    def largest_context(self) -> int:
        """The largest max_model_len that loads (0: none): what the cache holds, at most the trained length."""
        return min(self.tokens, self.trained) if self.memory_fits else 0

    def line(self) -> str:
        verdict = "fits" if self.fits else "does not fit"
        return (f"{self.model}: weights {size_text(self.weights)} + KV cache {size_text(self.room)} = "
                f"{size_text(self.need)} of {size_text(self.free)} free {self.where}; the KV cache holds "
                f"{self.tokens:,} tokens ({self.tokens // self.block_size:,} blocks of {self.block_size} × "
                f"{size_text(self.kv_per_token)} ({self.dtype})): max_model_len {self.max_model_len:,} {verdict}; the "
                f"largest that fits is {self.largest_context:,} tokens (trained on {self.trained:,})")

    def brief(self) -> str:
        return (f"{size_text(self.weights)}: {'fits' if self.fits else 'does not fit'}, up to "
                f"{self.largest_context:,} tokens of context (trained on {self.trained:,})")

    def __str__(self) -> str:
        return self.line()

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(self.line())


def text_config(config: dict) -> dict:
    """The language model's part of a config (a vision model nests it)."""
    return config.get("text_config") or config


def kv_per_token(config: dict, dtype_bytes: int) -> int:
    c = text_config(config)
    heads = c.get("num_attention_heads") or 1
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    return 2 * c["num_hidden_layers"] * kv_heads * head_dim * dtype_bytes


def make(config: dict, weights: int, options: dict, name: str, card: Card | None = None,
         free_ram: int | None = None, kv_space_gib: int | None = None) -> VllmPlan:
    """The plan for a model of this config.json and weights, loaded with `options`: on `card` (an
    NVIDIA device as NVML sees it) or, with none, on the CPU with `kv_space_gib` GiB of KV cache."""
    c = text_config(config)
    trained = c.get("max_position_embeddings") or 4096
    stored = str(c.get("torch_dtype") or c.get("dtype") or config.get("torch_dtype") or "bfloat16").replace("torch.", "")
    compute = str(options.get("dtype") or "auto").replace("torch.", "")
    compute = stored if compute == "auto" else compute
    cache = options.get("kv_cache_dtype") or "auto"
    dtype = compute if cache == "auto" else cache
    for d in (compute, dtype):
        if d not in BYTES:
            raise VllamaError(f"no plan for dtype {d!r}: use one of {', '.join(BYTES)}")
    if stored in BYTES and compute != stored:   # the weights are cast as they load
        weights = weights * BYTES[compute] // BYTES[stored]
    per_token = kv_per_token(config, BYTES[dtype])
    block = options.get("block_size") or BLOCK["gpu" if card else "cpu"]
    mml = options.get("max_model_len") or trained
    if card is None:
        room = (kv_space_gib or 1) * 2**30
        return VllmPlan(name, mml, trained, weights, per_token, dtype, room, block, weights + room, free_ram or 0, "RAM")
    util = options.get("gpu_memory_utilization") or round(min(CAP, (card.free - margin(card.total)) / card.total), 3)
    room = int(util * card.total) - model_need(weights)
    return VllmPlan(name, mml, trained, weights, per_token, dtype, room, block, int(util * card.total), card.free,
                    f"GPU {card.index}")


def plan(ref, options: dict, on_gpu: bool) -> VllmPlan:
    """The plan for `ref` (a model folder, or a Hub model's HubFiles: only its config.json is fetched)."""
    import os

    import psutil

    from .gpu_memory import cards, weights_bytes

    if hasattr(ref, "path"):
        config_file, weights = ref.path / "config.json", weights_bytes(ref.path)
    else:
        import huggingface_hub as hf

        from ..hub import speaking
        with speaking(ref.repo):
            config_file = Path(hf.hf_hub_download(ref.repo, "config.json"))
        weights = sum(n for f, n in ref.files if f.endswith((".safetensors", ".bin", ".pt")))
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise VllamaError(f"{config_file} cannot be read ({type(e).__name__}), so there is no plan for {ref.name}") from None
    options = dict(options)
    if not on_gpu and getattr(ref, "source", "") == "embedded":
        options.setdefault("dtype", "float32")   # as the engine loads it on a CPU
    if on_gpu:
        n = (options.get("tensor_parallel_size") or 1) * (options.get("pipeline_parallel_size") or 1)
        return make(config, weights // n, options, ref.name, card=min(cards(n), key=lambda c: c.free))
    space = options.get("cpu_kv_cache_gb") or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 1
    return make(config, weights, options, ref.name, free_ram=psutil.virtual_memory().available,
                kv_space_gib=int(space))
