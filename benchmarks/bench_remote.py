"""In-process llama.cpp vs the same model behind the llama.cpp HTTP server (the Ollama-style
architecture), driven through the openai engine, in pairs:

  short-request latency in-process / server   end-to-end latency of a 16-token request   goal <= 0.7
  streaming tokens/s in-process / server      1 / TPOT of 400-token generations          (reported)
"""
from __future__ import annotations

from paired import Ratio, paired


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.llamacpp import Engine as Local
    from vllama_jupyter.engines.openai import Engine as Remote
    from vllama_jupyter.models import resolve
    from vllama_jupyter.servers import make

    # llama-cpp-python's server takes no ignore_eos; the embedded model never ends by itself, so
    # both sides give every token asked for
    short = Sampling(max_tokens=16, temperature=0.0)
    long = Sampling(max_tokens=400, temperature=0.0)
    local = Local()
    local.load(resolve(None, "llamacpp"))
    server = make("llamacpp").start()
    try:
        remote = Remote.connect(url=server.url, preset="llamacpp-server")
        latency = paired("short-request latency in-process / server", "<= 0.7",
                         lambda: local.generate("ROMEO:\n", short).e2el,
                         lambda: remote.generate("ROMEO:\n", short).e2el,
                         pairs=5 if quick else 21, warmup=2, unit="s")
        speed = paired("streaming tok/s in-process / server", ">= 1", lambda: local.generate("JULIET:\n", long).tokens_per_s,
                       lambda: remote.generate("JULIET:\n", long).tokens_per_s, pairs=3 if quick else 7, unit="tokens/s")
        remote.close()
    finally:
        server.stop()
        local.close()
    return [latency, speed]
