"""vLLM's own serving benchmark client (`vllm bench serve`: random prompts, concurrency 4) against
a notebook's shared vLLM engine and against `vllm serve` of the same model, alternately, in pairs:

  share TTFT / vllm serve TTFT     median time to first token of the client's requests   goal <= 1
  share TPOT / vllm serve TPOT     median time per output token after the first          goal <= 1.05
  share / vllm serve output tok/s  the client's output throughput                        goal >= 0.95

Each request asks for OUT tokens (ignore_eos). A server that falls behind sends several tokens in
one event, which lowers its TPOT and raises its TTFT: read the three together.

Every run must complete all of its requests; the medians behind each ratio are in the results.
"""
from __future__ import annotations

import os
import tempfile

from paired import Ratio, paired
from vllm_client import run_vllm_client

OUT = 128


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter.servers import make
    from vllama_jupyter.session import get_session

    prompts = 8 if quick else 16
    out = tempfile.mkdtemp(prefix="vllama-bench-client-")
    session = get_session()
    session.load(None, "vllm")
    info = session.share()
    server = make("vllm").start(timeout=600)
    token = session.sharing.token
    runs: dict = {"share": [], "serve": []}

    def run(which: str) -> dict:
        url, model = (info["url"], info["model"]) if which == "share" else (server.url, server.model)
        os.environ["OPENAI_API_KEY"] = token if which == "share" else "none"
        r = run_vllm_client(url, model, str(session.ref.path), out, prompts=prompts, output_len=OUT)
        assert r["completed"] == prompts and r["failed"] == 0, r
        runs[which].append(r)
        print(r["line"], flush=True)
        return r
    try:
        ttft = paired("vllm bench serve TTFT: share / vllm serve", "<= 1", lambda: run("share")["median_ttft_ms"],
                      lambda: run("serve")["median_ttft_ms"], pairs=3 if quick else 5, warmup=1, unit="ms")
        tpot = paired("vllm bench serve TPOT: share / vllm serve", "<= 1.05", lambda: run("share")["median_tpot_ms"],
                      lambda: run("serve")["median_tpot_ms"], pairs=3 if quick else 5, unit="ms")
        speed = paired("vllm bench serve output tok/s: share / vllm serve", ">= 0.95",
                       lambda: run("share")["output_throughput"], lambda: run("serve")["output_throughput"],
                       pairs=3 if quick else 5, unit="tokens/s")
        return [ttft, tpot, speed]
    finally:
        os.environ.pop("OPENAI_API_KEY", None)
        server.stop()
        session.unload()


if __name__ == "__main__":
    from paired import show
    show(main())
