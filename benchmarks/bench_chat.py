"""A chat follow-up, as a user feels it: with a long system prompt (about 1,500 tokens) and the
history before it, how long the second turn takes to start against the first.

  TTFT turn 2 / turn 1    through the session's chat (the history re-rendered by the template each
                          turn), on llama.cpp (its KV cache keeps the shared prefix) and on vLLM
                          (prefix caching). One conversation per pair, each with its own system
                          prompt so that turn 1 always starts cold.                  goal <= 0.2
"""
from __future__ import annotations

from paired import Ratio

LINES = ("Thou art the chorus of this play, and speak in verse of the houses of York and Lancaster.",
         "Answer as a herald would: short, plain, and with the name of whoever speaks.",
         "Keep to the matter of the scene; never speak of what is not upon the stage.")


def system_prompt(eng, scene: int, tokens: int = 1500) -> str:
    text, i = f"Scene {scene}.", 0
    while len(eng.tokenize(text)) < tokens:
        text += " " + LINES[i % len(LINES)]
        i += 1
    return text


def follow_up(engine: str, model, pairs: int, **options) -> Ratio:
    from vllama_jupyter.session import Session

    s = Session()
    s.load(model, engine, **options)
    try:
        r = Ratio(f"chat follow-up TTFT turn 2 / turn 1 ({engine})", "<= 0.2", unit="s")
        for scene in range(pairs + 1):
            s.history.clear()
            system = system_prompt(s.engine, scene)
            first = s.chat("Who goes there?", system=system, max_tokens=24, temperature=0).run()
            second = s.chat("And what news from the north?", max_tokens=24, temperature=0).run()
            if scene:  # the first conversation warms up
                r.pairs.append((second.ttft, first.ttft, second.ttft / first.ttft))
        r.note = f"prompt {first.prompt_tokens} then {second.prompt_tokens} tokens"
        return r
    finally:
        s.unload()


def main(quick: bool = False) -> list[Ratio]:
    out = [follow_up("llamacpp", None, 3 if quick else 7, n_ctx=4096)]
    if not quick:
        from vllama_jupyter import engines

        from models import long_context_hf
        if engines.is_installed("vllm"):
            out.append(follow_up("vllm", str(long_context_hf()), 7, max_model_len=4096))
    return out
