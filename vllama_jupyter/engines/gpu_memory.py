"""How much GPU memory a vLLM load asks for: vLLM's gpu_memory_utilization is a share of the
whole card that must be free at start, so a fixed 0.9 fails in the second notebook. Here it is
chosen from what NVML says is free at load time, less a margin; a load that cannot fit says how
much is free and how much the model needs. The decisions are pure functions (tested by table);
NVML is read only where a GPU is present."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import VllamaError

GiB = 2**30
CAP = 0.9   # vLLM's own default, the most we ask for


@dataclass(frozen=True)
class Card:
    index: int
    total: int   # bytes
    free: int


def margin(total: int) -> int:
    """Room left for other processes and this process's CUDA context."""
    return max(GiB // 2, int(0.02 * total))


def model_need(weights: int) -> int:
    """Weights, plus room for activations and a useful KV cache."""
    return int(weights * 1.1) + GiB


def choose_utilization(cards: list[Card], weights: int, asked: float | None = None, model: str = "the model") -> float:
    """The gpu_memory_utilization for a load over `cards` (the tensor-parallel devices)."""
    card = min(cards, key=lambda c: c.free)   # every device must fit its share
    per_card = weights // len(cards)
    usable = card.free - margin(card.total)
    if asked is not None:
        if asked * card.total > card.free:
            raise VllamaError(f"gpu_memory_utilization {asked:g} asks for {asked * card.total / GiB:.1f} GiB of GPU "
                              f"{card.index} but {card.free / GiB:.1f} GiB of {card.total / GiB:.1f} GiB is free: "
                              f"leave it out to use what is free, or {SHARE_HINT}")
        return asked
    need = model_need(per_card)
    if usable < need:
        raise VllamaError(f"GPU {card.index} has {card.free / GiB:.1f} GiB free of {card.total / GiB:.1f} GiB but "
                          f"{model} needs about {need / GiB:.1f} GiB (weights {per_card / GiB:.1f} GiB + room to run): "
                          f"free GPU memory, or {SHARE_HINT}")
    return round(min(CAP, usable / card.total), 3)


SHARE_HINT = ("if another notebook has this model loaded, run %vllama share there and name no model here "
              "to use its engine")


def returned(before_load: int, after_close: int, total: int) -> bool:
    """Whether an unload gave the GPU memory back: used memory is back to what it was before the
    load, within the margin (other processes may have moved a little meanwhile)."""
    return after_close <= before_load + margin(total)


def weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*") if f.suffix in (".safetensors", ".bin", ".pt"))


def cards(count: int = 1) -> list[Card]:
    """The first `count` NVIDIA devices as NVML sees them now (no CUDA context is created)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        out = []
        for i in range(count):
            mem = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append(Card(i, int(mem.total), int(mem.free)))
        return out
    finally:
        pynvml.nvmlShutdown()


def plan(ref, opts: dict) -> tuple:
    """Set opts['gpu_memory_utilization'] from what is free now (unless given); return what
    check_returned() needs: (devices, bytes used before the load, total)."""
    n = (opts.get("tensor_parallel_size") or 1) * (opts.get("pipeline_parallel_size") or 1)
    devices = cards(n)
    opts["gpu_memory_utilization"] = choose_utilization(devices, weights_bytes(ref.path),
                                                        opts.get("gpu_memory_utilization"), ref.name)
    return n, sum(c.total - c.free for c in devices), devices[0].total


def check_returned(n: int, before: int, total: int, wait: float = 15.0) -> bool:
    """After an unload: wait until the GPU memory is back; say so when it is not."""
    import time

    from ..errors import notice

    deadline = time.monotonic() + wait
    while not returned(before, used(n), total):
        if time.monotonic() > deadline:
            notice(f"{(used(n) - before) / GiB:.1f} GiB of GPU memory is still in use after unloading: "
                   "another process may hold it (nvidia-smi shows which)")
            return False
        time.sleep(0.2)
    return True


def used(count: int = 1) -> int:
    return sum(c.total - c.free for c in cards(count))
