"""Prompt-lookup speculative decoding (speculative="ngram") on llama.cpp, in pairs:

  decode tokens/s, ngram / off, edit workload   the prompt holds a passage and asks for it again
                    with a change; greedy, the answer's decode speed (TTFT left out) with
                    speculation ÷ without, the same model in two engines, alternately. The draft
                    acceptance is printed beside it. Goal >= 1.5 where acceptance is >= 50 %,
                    >= 0.95 where it is lower (speculation backs off by itself).
    - embedded model (trained on Shakespeare: small, compute-light, it rarely copies)
    - random-weight model with Qwen's vocabulary and Qwen3's template (it repeats itself)
    - Qwen2.5-0.5B-shaped model (1 GB f16: memory-bound, where checking 9 tokens costs about one)
"""
from __future__ import annotations

from models import chat_model, qwen_shaped
from paired import Ratio, paired

PASSAGE = ("But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
           "Arise, fair sun, and kill the envious moon, who is already sick and pale with grief,\n"
           "that thou her maid art far more fair than she. Be not her maid, since she is envious.\n")
EDIT = f"Here is a passage:\n\n{PASSAGE}\nWrite it out again, with 'moon' for 'sun':\n\n{PASSAGE[:40]}"


def one(label: str, model: str, tokens: int, pairs: int) -> Ratio:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.llamacpp import Engine
    from vllama_jupyter.models import resolve

    ref = resolve(model, "llamacpp")
    off, on = Engine(), Engine()
    off.load(ref, n_ctx=1024)
    on.load(ref, n_ctx=1024, speculative="ngram")
    s = Sampling(temperature=0, max_tokens=tokens, ignore_eos=True)
    counts = {"drafted": 0, "accepted": 0}
    texts = {"on": [], "off": []}

    def with_drafts() -> float:
        r = on.stream(EDIT, s).run()
        for k in counts:
            counts[k] += r.record["speculative"][k]
        texts["on"].append(r.text)
        return 1 / r.tpot

    def without() -> float:
        r = off.stream(EDIT, s).run()
        texts["off"].append(r.text)
        return 1 / r.tpot

    try:
        ratio = paired(f"decode tok/s, ngram / off, edit ({label})", ">= 0.95", with_drafts, without, pairs,
                       unit="tokens/s")
    finally:
        on.close()
        off.close()
    accepted = counts["accepted"] / counts["drafted"] if counts["drafted"] else 0.0
    ratio.goal = ">= 1.5" if accepted >= 0.5 else ">= 0.95"
    ratio.note = f"{accepted:.0%} of {counts['drafted']} drafted tokens accepted; greedy output {same(texts)}"
    return ratio


def same(texts: dict) -> str:
    """'identical', or where the two first part (a near-tie broken the other way by a batch's
    summation order shows up on random weights, whose logits are nearly flat)."""
    a, b = set(texts["off"]), set(texts["on"])
    if len(a) == 1 and a == b:
        return "identical"
    x, y = texts["off"][0], texts["on"][0]
    at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    return f"departs at character {at} of {len(x)}"


def main(quick: bool = False) -> list[Ratio]:
    pairs, tokens = (3, 80) if quick else (8, 200)
    out = [one("embedded", "embedded", tokens, pairs),
           one("Qwen vocabulary, random weights", str(chat_model("Qwen-Qwen3-0.6B")), tokens, pairs)]
    if not quick:
        out.append(one("Qwen2.5-0.5B shape", str(qwen_shaped()), 100, 5))
    return out


if __name__ == "__main__":
    from paired import show

    show(main())
