"""vLLM's own serving benchmark client (`vllm bench serve`: random prompts, concurrency 4) against
a notebook's shared vLLM engine and against `vllm serve` of the same model, alternately, in pairs:

  share TTFT / vllm serve TTFT     median time to first token of the client's requests   goal <= 1
  share TPOT / vllm serve TPOT     median time per output token                          goal <= 1.05

Every run must complete all of its requests; the medians behind each ratio are in the results.
"""
from __future__ import annotations

import os
import tempfile

from paired import Ratio, paired
from vllm_client import run_vllm_client


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
        r = run_vllm_client(url, model, str(session.ref.path), out, prompts=prompts)
        assert r["completed"] == prompts and r["failed"] == 0, r
        runs[which].append(r)
        print(r["line"], flush=True)
        return r
    try:
        ttft = paired("vllm bench serve TTFT: share / vllm serve", "<= 1", lambda: run("share")["median_ttft_ms"],
                      lambda: run("serve")["median_ttft_ms"], pairs=3 if quick else 5, warmup=1, unit="ms")
        tpot = paired("vllm bench serve TPOT: share / vllm serve", "<= 1.05", lambda: run("share")["median_tpot_ms"],
                      lambda: run("serve")["median_tpot_ms"], pairs=3 if quick else 5, unit="ms")
        return [ttft, tpot]
    finally:
        os.environ.pop("OPENAI_API_KEY", None)
        server.stop()
        session.unload()


if __name__ == "__main__":
    from paired import show
    show(main())
