"""This project against llama.cpp's own C++ tools, built from the same llama.cpp commit
(`native.py`), in pairs:

  16-token request, in-process / llama-server, warm   end-to-end latency on the embedded model,
                    the second of two requests in a row; the server is driven through the openai
                    engine, as a notebook would                                           goal <= 0.5
                    (llama-server runs with --poll 0, and each side starts 0.2 s after the other
                    side's last request: after a request, either side's threads keep spinning for
                    a while and, on a small machine, take the cores the other side needs)
  the same after 2 s idle                             each request follows a 2 s pause, the
                    rhythm of cells in a notebook                                         goal <= 0.5
  %%vllama TTFT after 2 s idle / llama-server's        a real kernel's cell (the stats line's
                    TTFT) against the server's first token, both after 2 s idle          goal <= 0.5
  decode tokens/s / llama-bench tg                    128-token greedy decode on the 1 GB
                    Qwen2.5-0.5B-shaped model, same threads                              goal >= 0.97
  prompt tokens/s / llama-bench pp                    a 512-token prompt on the same model   goal >= 0.95
"""
from __future__ import annotations

import json
import statistics
import subprocess

from models import qwen_shaped
from native import native_tools
from paired import Ratio, paired


def bench_ts(tool, model, threads: int, prompt: int, gen: int) -> float:
    """llama-bench's mean tokens/s for one test (pp or tg), one repetition."""
    r = subprocess.run([str(tool), "-m", str(model), "-t", str(threads), "-p", str(prompt), "-n", str(gen),
                        "-r", "1", "-o", "json"], capture_output=True, text=True, check=True, timeout=600)
    return float(json.loads(r.stdout)[0]["avg_ts"])


def second(request) -> float:
    """The second of two requests in a row: the engine warm, and the other side's threads (which
    spin a while after their own request) long quiet after paired()'s pause."""
    request()
    return request()


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.bench.kernel import Kernel
    from vllama_jupyter.engines.llamacpp import Engine as Local
    from vllama_jupyter.engines.openai import Engine as Remote
    from vllama_jupyter.models import resolve
    from vllama_jupyter.servers import Server, free_port

    tools = native_tools()
    short = Sampling(max_tokens=16, temperature=0.0, ignore_eos=True)
    n = 3 if quick else 9
    out = []
    local = Local()
    local.load(resolve(None, "llamacpp"), n_ctx=1024)
    threads = local.llm.n_threads
    port = free_port()
    server = Server("llama-server", [str(tools["llama-server"]), "-m", str(local.ref.path), "--host", "127.0.0.1",
                                     "--port", str(port), "-c", "1024", "-t", str(threads), "--alias", "tiny-shakespeare", "--poll", "0"],
                    port, "tiny-shakespeare").start()
    k = Kernel()
    try:
        remote = Remote.connect(url=server.url, preset="llama-server")
        ours = lambda: local.generate("ROMEO:\n", short).e2el  # noqa: E731
        theirs = lambda: remote.generate("ROMEO:\n", short).e2el  # noqa: E731
        out.append(paired("16-token request, in-process / llama-server, warm", "<= 0.5", lambda: second(ours),
                          lambda: second(theirs), pairs=n, warmup=2, unit="s"))
        out.append(paired("16-token request, in-process / llama-server, after 2 s idle", "<= 0.5", ours, theirs,
                          pairs=n, warmup=1, unit="s", settle=2.0))
        k.execute("%load_ext vllama_jupyter\n%vllama load embedded --n-ctx 1024 --engine llamacpp")

        def cell_ttft() -> float:
            assert k.execute("%%vllama -t 0 --max-tokens 16 --ignore-eos --quiet -o r\nROMEO:\n").status == "ok"
            return k.value("r.ttft")
        out.append(paired("%%vllama TTFT after 2 s idle / llama-server's", "<= 0.5", cell_ttft,
                          lambda: remote.generate("ROMEO:\n", short).ttft, pairs=n, warmup=1, unit="s", settle=2.0))
        remote.close()
    finally:
        k.stop()
        server.stop()
        local.close()

    big = qwen_shaped()
    local = Local()
    local.load(resolve(str(big), "llamacpp"), n_ctx=1024)
    try:
        threads = local.llm.n_threads
        decode = Sampling(max_tokens=128, temperature=0.0, ignore_eos=True)
        out.append(paired("decode tokens/s / llama-bench tg", ">= 0.97",
                          lambda: local.generate("ROMEO:", decode).tokens_per_s,
                          lambda: bench_ts(tools["llama-bench"], big, threads, 0, 128), pairs=n, unit="tokens/s"))
        prompt = list(range(1000, 1512))   # 512 tokens
        one = Sampling(max_tokens=1, temperature=0.0, ignore_eos=True)

        def prefill() -> float:
            r = local.generate(prompt, one)
            return r.prompt_tokens / r.ttft
        out.append(paired("prompt tokens/s (512) / llama-bench pp", ">= 0.95", prefill,
                          lambda: bench_ts(tools["llama-bench"], big, threads, 512, 0), pairs=n, unit="tokens/s"))
    finally:
        local.close()
    for r in out:   # the medians behind each ratio
        a, b = (statistics.median(p[i] for p in r.pairs) for i in (0, 1))
        scale, unit = (1000, "ms") if r.unit == "s" else (1, r.unit)
        r.note = f"{a * scale:.1f} vs {b * scale:.1f} {unit}"
    return out


if __name__ == "__main__":
    import sys

    from paired import show
    show(main(quick="--quick" in sys.argv))
