"""The first cell after loading a large model, in pairs:

  first cell, hash in background / waited for   the time from a finished load to the first
                    16-token generation with its record, on the 1 GB Qwen2.5-0.5B-shaped model
                    (f16 GGUF built locally), each run with an empty hash cache. A: the model is
                    hashed in a low-priority thread from the load and the record says 'pending'
                    until it is done; B: the first record hashes the model (as before).   goal <= 0.5
"""
from __future__ import annotations

import os
import tempfile
import time

from models import qwen_shaped
from paired import Ratio, paired


def main(quick: bool = False) -> list[Ratio]:
    from vllama_jupyter import Sampling, provenance
    from vllama_jupyter.engines.llamacpp import Engine
    from vllama_jupyter.models import resolve

    ref = resolve(str(qwen_shaped()), "llamacpp")
    s = Sampling(max_tokens=16, temperature=0.0)
    seen = set()

    def first_cell(background: bool) -> float:
        os.environ["VLLAMA_CACHE"] = tempfile.mkdtemp(prefix="vllama-bench-hash-")
        provenance._memo.clear()
        provenance.WAIT_BYTES = 64 * 2**20 if background else float("inf")
        eng = Engine()
        eng.load(ref, n_ctx=512)
        try:
            if background:
                eng.prefetch_identity()
            t0 = time.perf_counter()
            r = eng.generate("ROMEO:", s)
            seen.add(r.record["model_sha256"] if background else "hashed")
            took = time.perf_counter() - t0
            for job in list(provenance._jobs.values()):
                job.join()   # the next run starts from nothing
            return took
        finally:
            eng.close()

    ratio = paired("first cell, hash in background / waited for", "<= 0.5", lambda: first_cell(True),
                   lambda: first_cell(False), pairs=3 if quick else 7, warmup=1, unit="s")
    import statistics
    a, b = (statistics.median(p[i] for p in ratio.pairs) for i in (0, 1))
    ratio.note = f"{a * 1000:.0f} ms vs {b * 1000:.0f} ms; records said: {', '.join(sorted(seen))}"
    return [ratio]


if __name__ == "__main__":
    from paired import show
    show(main())
