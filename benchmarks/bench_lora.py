"""LoRA adapters on llama.cpp, in pairs in one process:

  decode with adapter / without   tokens/s of 64 greedy tokens with a rank-16 adapter on every
                    attention and FFN matrix ÷ the same request on the base model, on the
                    embedded model and, where its package is installed, Gemma 3 270M Q4_K_M.
                                                                                 goal >= 0.9
  switch            TTFT of a request whose adapter differs from the last request's ÷ one
                    whose adapter is the same (the note: the switch's cost in ms).  goal <= 1.2
"""
from __future__ import annotations

import statistics
import sys

from models import gemma, random_lora
from paired import Ratio, paired

TOKENS = 64


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter.models import EMBEDDED_DIR
    from vllama_jupyter.sampling import Sampling
    from vllama_jupyter.session import Session

    models = {"embedded": EMBEDDED_DIR / "model.gguf"}
    if gemma() is not None:
        models["Gemma 3 270M Q4_K_M"] = gemma()
    pairs = 3 if quick else 7
    ratios = []
    for label, path in models.items():
        s = Session()
        s.load(str(path), "llamacpp")
        s.lora_add(random_lora(path, rank=16, scale=0.05), name="a")
        s.lora_add(random_lora(path, rank=16, seed=1, scale=0.05), name="b")
        decode = Sampling(temperature=0, max_tokens=TOKENS, ignore_eos=True)
        one = Sampling(temperature=0, max_tokens=1)

        def rate(lora):
            return s.generate("ROMEO:", decode, lora=lora).tokens_per_s

        ratios.append(paired(f"decode with adapter / without, {label}", ">= 0.9", lambda: rate("a"),
                             lambda: rate(None), pairs=pairs, unit="tokens/s"))

        def ttft(previous):   # a request with adapter "a" after one with `previous`
            s.generate("ROMEO:", one, lora=previous)
            return s.generate("ROMEO:", one, lora="a").ttft

        r = paired(f"switch adapters between requests, {label}", "<= 1.2", lambda: ttft("b"), lambda: ttft("a"),
                   pairs=pairs, unit="s")
        r.note = f"a switch costs {1000 * statistics.median(a - b for a, b, _ in r.pairs):.2f} ms"
        ratios.append(r)
        s._shutdown()
    return ratios


if __name__ == "__main__":
    from paired import show

    show(main("--quick" in sys.argv))
