"""%%vllama overhead, measured in one run on the embedded model:

  kernel/raw   tokens/s a jupyter_client sees for a %%vllama cell ÷ tokens/s of the engine's raw token
               loop (llama_cpp's generate() alone, no detokenizing)           goal >= 0.97
  live/off     in-kernel tokens/s with live display ÷ with --no-stream        goal >= 0.99

The client's tokens/s = output tokens ÷ (execute request sent -> final display update received).
The raw loop's = output tokens ÷ (call -> last token). Each is the median of REPEATS runs.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import show  # noqa: E402

N = 1000
REPEATS = 7
PROMPT = "ROMEO:\n"


def raw_loop_tps() -> float:
    import llama_cpp

    from vllama_jupyter.models import embedded

    import psutil

    threads = psutil.cpu_count(logical=False) or 1  # as the engine sets it
    llm = llama_cpp.Llama(model_path=str(embedded("gguf").path), n_ctx=N + 64, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(PROMPT.encode())
    runs = []
    for _ in range(REPEATS + 1):
        t0 = time.perf_counter()
        n = 0
        for _tok in llm.generate(ids, temp=0.0, top_k=40, top_p=0.95, min_p=0.0, repeat_penalty=1.0):
            n += 1
            if n == N:
                break
        runs.append(N / (time.perf_counter() - t0))
    llm.close()
    return statistics.median(runs[1:])


def kernel_tps() -> tuple[float, float, float]:
    from vllama_jupyter.bench.kernel import Kernel, of_type

    k = Kernel()
    try:
        k.execute(f"%load_ext vllama_jupyter\n%vllama load embedded --n-ctx {N + 64}")
        cell = f"%%vllama -t 0 --max-tokens {N} --ignore-eos --quiet -o r\n{PROMPT}"
        k.execute(cell)  # warm-up
        seen, live, off = [], [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            msgs = k.execute(cell)
            last = of_type(msgs, "update_display_data")[-1]["recv"]
            seen.append(N / (last - t0))
            live.append(k.value("r.output_tokens / r.e2el"))
            k.execute(cell.replace("--quiet", "--quiet --no-stream"))
            off.append(k.value("r.output_tokens / r.e2el"))
        return statistics.median(seen), statistics.median(live), statistics.median(off)
    finally:
        k.stop()


def main() -> list[tuple[str, float, str]]:
    raw = raw_loop_tps()
    seen, live, off = kernel_tps()
    print(f"raw token loop: {raw:,.0f} tokens/s; client-seen %%vllama: {seen:,.0f} tokens/s; "
          f"in-kernel live display {live:,.0f} tokens/s, display off {off:,.0f} tokens/s ({N} tokens, median of {REPEATS})")
    rows = [("%%vllama client-seen / raw token loop", seen / raw, ">= 0.97"),
            ("%%vllama live display / display off", live / off, ">= 0.99")]
    return show(rows)


if __name__ == "__main__":
    main()
