"""Streaming detokenization with a real tokenizer: Qwen2's byte-level BPE (151,936 tokens, from
the vocabulary-only GGUF in llama-cpp-python's source distribution) around a small random-weight
model, whose sampled tokens are arbitrary pieces of that vocabulary (multi-byte UTF-8 split
across tokens included). In pairs:

  stream / bare loop    tokens/s of this project's stream (sampling, incremental UTF-8
                        detokenization, deltas) ÷ llama.cpp's bare generate() loop, same model,
                        same sampling                                                  goal >= 0.97
  logprobs=5 / off      tokens/s of the same stream keeping each token's log-probability and
                        its 5 best alternatives ÷ without                               goal >= 0.9
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

from models import real_tokenizer
from paired import Ratio, paired

PROMPT = "The quick brown fox, 敏捷的棕色狐狸, jumps over 🦊 the lazy dog."


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.llamacpp import Engine
    from vllama_jupyter.models import resolve

    from bench_magic import Bare

    n = 100 if quick else 300
    path = real_tokenizer("qwen2")
    eng = Engine()
    eng.load(resolve(str(path), "llamacpp"), n_ctx=n + 64)
    bare = Bare(path, n + 64)
    ids = eng.tokenize(PROMPT)
    s = Sampling(max_tokens=n, temperature=1.0, top_k=40, top_p=0.95, seed=7, ignore_eos=True)

    def ours(sampling=s) -> float:
        t0 = time.perf_counter()
        r = eng.generate(ids, sampling)
        assert r.output_tokens == n
        return n / (time.perf_counter() - t0)

    try:
        r = paired("stream / bare loop, Qwen2 byte-level BPE vocabulary", ">= 0.97", ours,
                   lambda: bare.tokens_per_s(n, temp=1.0, seed=7, ids=ids), pairs=3 if quick else 9, unit="tokens/s")
        lp = paired("logprobs=5 / off, Qwen2 byte-level BPE vocabulary", ">= 0.9",
                    lambda: ours(replace(s, logprobs=5)), ours, pairs=3 if quick else 9, unit="tokens/s")
    finally:
        bare.close()
        eng.close()
    added = statistics.median(1 / a - 1 / b for a, b, _ in r.pairs) * 1e6
    r.note = f"{added:+.1f} µs/token over the bare loop's {1e6 / statistics.median(b for _, b, _ in r.pairs):.0f}"
    return [r, lp]
