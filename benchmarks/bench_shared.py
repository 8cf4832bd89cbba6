"""A shared engine against the same engine in the kernel, with two real kernels: kernel A loads
the embedded model on llama.cpp and shares it; kernel B uses it over HTTP. Requests alternate
between the kernels, in pairs:

  short-request latency in A / in B        end-to-end latency of a 16-token request   (reported; < 1)
  streaming tokens/s in B / in A           1 / TPOT of 400-token generations          goal >= 0.8
"""
from __future__ import annotations

import os
import tempfile

from paired import Ratio, paired

SHORT = "print(v.generate('ROMEO:\\n', max_tokens=16, temperature=0, ignore_eos=True).e2el)"
LONG = "print(v.generate('JULIET:\\n', max_tokens=400, temperature=0, ignore_eos=True).tokens_per_s)"


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter.bench.kernel import Kernel, stream_text

    runtime = tempfile.mkdtemp(prefix="vllama-bench-runtime-")
    env = {"JUPYTER_RUNTIME_DIR": runtime, "VLLAMA_SHARED": "1"}
    a, b = Kernel(extra_env=env), Kernel(extra_env=env)

    def number(k: Kernel, code: str) -> float:
        msgs = k.execute(code)
        assert msgs.status == "ok", msgs
        return float(stream_text(msgs).strip())
    try:
        a.execute("%load_ext vllama_jupyter\nimport vllama_jupyter as v\n%vllama load embedded --engine llamacpp\n%vllama share")
        b.execute("%load_ext vllama_jupyter\nimport vllama_jupyter as v\nv.load()")
        assert b.value("v.status()['engine']") == "openai"
        latency = paired("short-request latency in-process / shared", "<= 1", lambda: number(a, SHORT),
                         lambda: number(b, SHORT), pairs=5 if quick else 21, warmup=2, unit="s")
        speed = paired("streaming tok/s shared / in-process", ">= 0.8", lambda: number(b, LONG),
                       lambda: number(a, LONG), pairs=3 if quick else 7, unit="tokens/s")
    finally:
        a.stop()
        b.stop()
        for f in os.listdir(runtime):
            os.unlink(os.path.join(runtime, f))
        os.rmdir(runtime)
    return [latency, speed]


if __name__ == "__main__":
    from paired import show
    show(main())
