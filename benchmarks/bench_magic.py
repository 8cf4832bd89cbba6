"""What the %%vllama path costs per token, measured in pairs (a %%vllama cell in a real kernel,
then llama.cpp's bare generate() loop in this process, alternately):

  client-seen / bare loop   tokens/s a jupyter_client sees for a %%vllama cell (execute request
                            sent -> final display update received) ÷ tokens/s of the bare loop
                            (call -> N-th token), same model, context and sampling
                            embedded model: goal >= 0.97 (<= 10 µs/token added)
                            Qwen2.5-0.5B-shaped model: goal >= 0.995
  live display / off        in-kernel tokens/s (output tokens / E2EL) with live display ÷ with
                            --no-stream, alternately                                 goal >= 0.99
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from paired import Ratio, paired

PROMPT = "ROMEO:\n"


class Bare:
    """llama.cpp's own token loop (llama-cpp-python's generate(): no detokenizing, no Python of
    ours) on a context our engine configured (threads, flash attention), the prompt evaluated
    afresh each time as our engine does."""

    def __init__(self, path: Path, n_ctx: int):
        from vllama_jupyter.engines.llamacpp import Engine
        from vllama_jupyter.models import resolve

        self.engine = Engine()
        self.engine.load(resolve(str(path), "llamacpp"), n_ctx=n_ctx)
        self.llm = self.engine.llm
        self.ids = self.llm.tokenize(PROMPT.encode())

    def tokens_per_s(self, n: int, **sampling) -> float:
        # on the process's llama.cpp thread, where the engines run theirs (see engines/worker.py)
        from vllama_jupyter.engines.worker import shared
        return shared().call(lambda: n / self.loop(n, **sampling))

    def loop(self, n: int, temp: float = 0.0, seed: int = 0, ids=None) -> float:
        """Seconds from the call to the n-th token."""
        self.llm.set_seed(seed)
        t0 = time.perf_counter()
        self.llm.reset()
        count = 0
        for _tok in self.llm.generate(self.ids if ids is None else ids, temp=temp, top_k=40, top_p=0.95, min_p=0.0,
                                      repeat_penalty=1.0):
            count += 1
            if count == n:
                break
        return time.perf_counter() - t0

    def close(self) -> None:
        self.engine.close()


class Cell:
    """A real kernel with the same model loaded; tokens/s as the client sees a %%vllama cell."""

    def __init__(self, model: str, n_ctx: int):
        from vllama_jupyter.bench.kernel import Kernel

        self.k = Kernel()
        msgs = self.k.execute(f"%load_ext vllama_jupyter\n%vllama load {model} --engine llamacpp --n-ctx {n_ctx}")
        assert msgs.status == "ok", msgs

    def client_tokens_per_s(self, n: int, flags: str = "") -> float:
        from vllama_jupyter.bench.kernel import of_type

        t0 = time.perf_counter()
        msgs = self.k.execute(f"%%vllama -t 0 --max-tokens {n} --ignore-eos --quiet {flags} -o r\n{PROMPT}")
        shown = of_type(msgs, "update_display_data") or of_type(msgs, "display_data")
        return n / (shown[-1]["recv"] - t0)

    def kernel_tokens_per_s(self, n: int, flags: str = "") -> float:
        self.client_tokens_per_s(n, flags)
        return self.k.value("r.output_tokens / r.e2el")

    def close(self) -> None:
        self.k.stop()


def overhead(name: str, goal: str, model_path: Path, kernel_model: str, n: int, pairs: int,
             warmup: int = 1) -> Ratio:
    bare, cell = Bare(model_path, n + 64), Cell(kernel_model, n + 64)
    try:
        r = paired(name, goal, lambda: cell.client_tokens_per_s(n), lambda: bare.tokens_per_s(n),
                   pairs=pairs, warmup=warmup, unit="tokens/s")
    finally:
        cell.close()
        bare.close()
    added = statistics.median(1 / a - 1 / b for a, b, _ in r.pairs) * 1e6
    r.note = f"{added:+.1f} µs/token over the bare loop's {1e6 / statistics.median(b for _, b, _ in r.pairs):.0f}"
    return r


def live_vs_off(n: int, pairs: int) -> Ratio:
    cell = Cell("embedded", n + 64)
    try:
        return paired("%%vllama live display / display off", ">= 0.99",
                      lambda: cell.kernel_tokens_per_s(n), lambda: cell.kernel_tokens_per_s(n, "--no-stream"),
                      pairs=pairs, unit="tokens/s")
    finally:
        cell.close()


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter.models import embedded

    from models import qwen_shaped

    n, pairs = (300, 3) if quick else (2000, 9)
    out = [overhead("%%vllama client-seen / bare loop (embedded)", ">= 0.97", embedded("gguf").path, "embedded",
                    n, pairs),
           live_vs_off(n, pairs)]
    if not quick:
        path = qwen_shaped()
        out.append(overhead("%%vllama client-seen / bare loop (Qwen2.5-0.5B shape)", ">= 0.995", path, str(path),
                            64, 7, warmup=3))  # 1 GB of weights: the first runs page them in
    return out
