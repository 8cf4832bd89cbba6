"""llama.cpp decoding, measured in pairs:

  late/early TPOT, ours ÷ bare   how much slower tokens 901-1000 come than tokens 2-101 of one
                    1,000-token greedy generation on the embedded model, through this project's
                    stream, divided by the same figure for llama.cpp's bare generate() loop on the
                    same model in the same process, alternately. The bare loop's own drift (a
                    growing context on a tiny model) cancels; what is left is ours.  goal <= 1.02
  bandwidth use     decode bytes/s ÷ memory read bandwidth measured here (alternately), on a
                    random-weight model of Qwen2.5-0.5B's shape (f16 GGUF built locally).
                    bytes/token = every weight once (the output layer is tied to the embeddings)
                    + the KV cache read                                               goal >= 0.8
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from models import QWEN, qwen_shaped
from paired import Ratio, paired


def drift(gaps: list[float], n: int) -> float:
    """Mean gap of the last 100 tokens ÷ of tokens 2-101 (scaled down for short runs)."""
    w = max(10, n // 10)
    return statistics.mean(gaps[-w:]) / statistics.mean(gaps[1:w + 1])


def tpot_drift(n: int, pairs: int) -> Ratio:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.llamacpp import Engine
    from vllama_jupyter.engines.worker import shared
    from vllama_jupyter.models import resolve

    eng = Engine()
    eng.load(resolve(None, "llamacpp"), n_ctx=n + 100)
    bare = eng.llm   # llama-cpp-python's own loop on the same context
    ids = bare.tokenize(b"ROMEO:\n")

    def ours() -> float:
        r = eng.generate("ROMEO:\n", Sampling(max_tokens=n, temperature=0.0, ignore_eos=True))
        return drift(r.itl, n)

    def theirs() -> float:   # on the llama.cpp thread our engine uses too
        return shared().call(bare_loop)

    def bare_loop() -> float:
        times = []
        bare.reset()
        for tok in bare.generate(ids, temp=0.0, top_k=40, top_p=0.95, min_p=0.0, repeat_penalty=1.0):
            times.append(time.perf_counter())
            if len(times) == n:
                break
        return drift(np.diff(times).tolist(), n)
    try:
        return paired(f"late / early TPOT, ours ÷ bare loop ({n} tokens)", "<= 1.02", ours, theirs, pairs=pairs,
                      unit="late/early")
    finally:
        eng.close()


def weight_bytes(path: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors)


def read_bandwidth(threads: int, size: int = 1 << 30) -> float:
    """Bytes/s read from a 1 GiB array by `threads` threads, each reducing its own slice; the best
    of several vectorised kernels (sum, max, count_nonzero, dot) and 5 tries, so that the figure
    is memory-bound rather than limited by one kernel's arithmetic."""
    a = np.ones(size // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    kernels = (np.sum, np.max, lambda p: np.count_nonzero(p.view(np.uint8)), lambda p: np.dot(p, p))
    best = 0.0
    for kernel in kernels:
        for _ in range(5):
            ts = [threading.Thread(target=kernel, args=(p,)) for p in parts]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            best = max(best, a.nbytes / (time.perf_counter() - t0))
    return best


def decode_rate(path: Path, threads: int, n: int = 48) -> tuple[float, int]:
    from vllama_jupyter.engines.worker import shared

    return shared().call(lambda: _decode_rate(path, threads, n))


def _decode_rate(path: Path, threads: int, n: int) -> tuple[float, int]:
    from vllama_jupyter.engines.llamacpp import Engine
    from vllama_jupyter.models import resolve

    eng = Engine()   # as our engine configures llama.cpp
    eng.load(resolve(str(path), "llamacpp"), n_ctx=256, n_threads=threads, n_threads_batch=threads)
    llm = eng.llm
    ids = llm.tokenize(b"t1 t2 t3 t4")
    rates = []
    for _ in range(3):
        times = []
        llm.reset()
        for i, _tok in enumerate(llm.generate(ids, temp=0.0, top_k=1, min_p=0.0, repeat_penalty=1.0)):
            times.append(time.perf_counter())
            if i == n:
                break
        rates.append((len(times) - 2) / (times[-1] - times[1]))  # decode only: after the first token
    ctx = len(ids) + n
    eng.close()
    return statistics.median(rates), ctx


def bandwidth_use(pairs: int) -> Ratio:
    path = qwen_shaped()
    threads = os.cpu_count() or 1
    s = QWEN
    per_token = None

    def decode() -> float:
        nonlocal per_token
        rate, ctx = decode_rate(path, threads)
        kv = 2 * s["layers"] * s["kv_heads"] * (s["hidden"] // s["heads"]) * 2 * ctx / 2  # f16 K and V, mean context
        per_token = weight_bytes(path) + kv
        return rate * per_token

    r = paired("llama.cpp decode bytes/s / memory bandwidth", ">= 0.8", decode,
               lambda: max(read_bandwidth(threads), read_bandwidth(1)), pairs=pairs, warmup=0, unit="bytes/s")
    r.note = (f"{per_token / 1e9:.3f} GB/token; decode {statistics.median(a for a, _, _ in r.pairs) / 1e9:.1f} GB/s, "
              f"bandwidth {statistics.median(b for _, b, _ in r.pairs) / 1e9:.1f} GB/s")
    return r


def main(quick: bool = False) -> list[Ratio]:
    if quick:
        return [tpot_drift(300, 3)]
    return [tpot_drift(1000, 7), bandwidth_use(3)]
