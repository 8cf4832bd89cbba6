"""The agent APIs on one share, A and B interleaved, each request streamed and read as a client
reads it (httpx, server-sent events):

  tokens/s    streamed output tokens/s (64 tokens over the request's whole time: on the embedded
              model they come in a few events, so a rate after the first one is noise) through
              /v1/responses and through /v1/messages ÷ the same request through
              /v1/chat/completions (greedy, ignore_eos).                             goal >= 0.97
  TTFT        time to the first text, the same pairs.                                 goal <= 1.05

On the embedded model (thousands of tokens/s: the protocol's cost shows most) and the 0.5B f16
shape (a real model's speed).
"""
from __future__ import annotations

import json
import sys
import time

from models import qwen_shaped
from paired import paired

N = 64
BODIES = {
    "chat": ("/chat/completions", {"messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": N}),
    "responses": ("/responses", {"input": "ROMEO:", "max_output_tokens": N}),
    "messages": ("/messages", {"messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": N}),
}


def timed(client, url: str, model: str, api: str) -> tuple[float, float]:
    """(seconds to the first text, output tokens/s over the whole request) of one streamed request."""
    path, body = BODIES[api]
    body = {**body, "model": model, "temperature": 0, "ignore_eos": True, "stream": True}
    t0, first, last = time.perf_counter(), None, None
    with client.stream("POST", url + path, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if _has_text(data):
                last = time.perf_counter()
                first = first or last
    return first - t0, N / (last - t0)


def _has_text(data: dict) -> bool:
    if "choices" in data:   # chat completions
        return any(c.get("delta", {}).get("content") for c in data["choices"])
    if data.get("type") == "response.output_text.delta":   # responses
        return bool(data["delta"])
    return data.get("type") == "content_block_delta" and bool(data["delta"].get("text"))   # messages


def main(quick: bool = False) -> list:
    import httpx

    import vllama_jupyter as v
    from vllama_jupyter.session import get_session

    ratios = []
    for label, model in (("embedded", None), ("0.5B f16 shape", str(qwen_shaped()))):
        v.load(model, "llamacpp")
        info = get_session().share()
        token = get_session().sharing.token
        client = httpx.Client(timeout=300, headers={"Authorization": f"Bearer {token}"})
        for api in ("responses", "messages"):
            pairs = 5 if quick else 15
            ratios.append(paired(f"streamed tokens/s, /v1/{api} / /v1/chat/completions, {label}", ">= 0.97",
                                 lambda: timed(client, info["url"], info["model"], api)[1],
                                 lambda: timed(client, info["url"], info["model"], "chat")[1],
                                 pairs=pairs, unit="tokens/s"))
            ratios.append(paired(f"TTFT, /v1/{api} / /v1/chat/completions, {label}", "<= 1.05",
                                 lambda: timed(client, info["url"], info["model"], api)[0],
                                 lambda: timed(client, info["url"], info["model"], "chat")[0],
                                 pairs=pairs, unit="s"))
        client.close()
        get_session().stop_sharing()
    v.unload()
    return ratios


if __name__ == "__main__":
    from paired import show

    show(main("--quick" in sys.argv))
