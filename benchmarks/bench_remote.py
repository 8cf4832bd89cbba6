"""In-process llama.cpp vs the same model behind the llama.cpp HTTP server (the Ollama-style
architecture), driven through the openai engine, one run:

  in-process/server latency   end-to-end latency of a short request (16 tokens), median of 30  goal <= 0.7
  and the streaming tokens/s of both (1 / TPOT, 400-token generations, median of 5).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import show  # noqa: E402


def main() -> list[tuple[str, float, str]]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.llamacpp import Engine as Local
    from vllama_jupyter.engines.openai import Engine as Remote
    from vllama_jupyter.models import resolve
    from vllama_jupyter.servers import make

    short = Sampling(max_tokens=16, temperature=0.0, ignore_eos=True)
    long = Sampling(max_tokens=400, temperature=0.0)
    local = Local()
    local.load(resolve(None, "llamacpp"))
    server = make("llamacpp").start()
    try:
        remote = Remote.connect(url=server.url, preset="llamacpp-server")
        lat = {"in-process": [], "server": []}
        tps = {"in-process": [], "server": []}
        for eng, key in ((local, "in-process"), (remote, "server")):
            eng.generate("ROMEO:\n", short)  # warm-up
        for _ in range(30):
            for eng, key in ((local, "in-process"), (remote, "server")):
                lat[key].append(eng.generate("ROMEO:\n", short).e2el)
        for _ in range(5):
            for eng, key in ((local, "in-process"), (remote, "server")):
                tps[key].append(eng.generate("JULIET:\n", long).tokens_per_s)
        remote.close()
    finally:
        server.stop()
        local.close()
    med = {k: statistics.median(v) for k, v in lat.items()}
    speed = {k: statistics.median(v) for k, v in tps.items()}
    print(f"short request (16 tokens) end-to-end: in-process {med['in-process'] * 1000:.1f} ms, "
          f"llama.cpp server {med['server'] * 1000:.1f} ms")
    print(f"streaming: in-process {speed['in-process']:,.0f} tok/s, llama.cpp server {speed['server']:,.0f} tok/s")
    rows = [("short-request latency in-process / server", med["in-process"] / med["server"], "<= 0.7"),
            ("streaming tok/s in-process / server", speed["in-process"] / speed["server"], "(report)")]
    return show(rows)


if __name__ == "__main__":
    main()
