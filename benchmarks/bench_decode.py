"""llama.cpp decoding, measured in one run:

  late/early TPOT   mean gap between tokens 901-1000 ÷ tokens 2-101 of one 1,000-token greedy
                    generation on the embedded model (how much a growing context slows decoding)  goal <= 1.05
  bandwidth use     decode bytes/s ÷ memory read bandwidth measured here, on a randomly initialised
                    model of Qwen2.5-0.5B's shape (llama architecture, f16 GGUF built locally:
                    nothing is downloaded). bytes/token = every weight once (the output layer is
                    tied to the embeddings) + the KV cache read                              goal >= 0.8
"""
from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import show  # noqa: E402

CACHE = Path(os.environ.get("VLLAMA_BENCH_CACHE", Path.home() / ".cache" / "vllama-jupyter"))
# Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads (2 KV heads), FFN 4864, vocab 151,936, tied embeddings
SHAPE = dict(vocab=151936, hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864, ctx=32768)


def tpot_drift() -> tuple[float, float, float]:
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.llamacpp import Engine
    from vllama_jupyter.models import resolve

    eng = Engine()
    eng.load(resolve(None, "llamacpp"), n_ctx=1100)
    ratios = []
    for _ in range(3):
        r = eng.generate("ROMEO:\n", Sampling(max_tokens=1000, temperature=0.0, ignore_eos=True))
        gaps = r.itl
        early, late = statistics.mean(gaps[1:101]), statistics.mean(gaps[-100:])
        ratios.append((late / early, early, late))
    eng.close()
    return sorted(ratios)[1]  # the median run


def build_realistic_gguf() -> Path:
    """A random-weight llama model of Qwen2.5-0.5B's dimensions, written with the gguf package."""
    import gguf

    path = CACHE / "qwen2.5-0.5b-shape-f16.gguf"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    s = SHAPE
    head_dim = s["hidden"] // s["heads"]
    w = gguf.GGUFWriter(str(path) + ".part", "llama")
    w.add_name("random Qwen2.5-0.5B-shaped llama")
    w.add_context_length(s["ctx"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    tokens += [f"\u2581t{i}".encode() for i in range(s["vocab"] - len(tokens))]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    w.add_token_types(types + [gguf.TokenType.NORMAL] * (len(tokens) - len(types)))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    kv = s["kv_heads"] * head_dim
    w.add_tensor("token_embd.weight", rand(s["vocab"], s["hidden"]))
    for i in range(s["layers"]):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(s["hidden"], np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(s["hidden"], s["hidden"]))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(kv, s["hidden"]))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(kv, s["hidden"]))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(s["hidden"], s["hidden"]))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(s["hidden"], np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(s["ffn"], s["hidden"]))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(s["ffn"], s["hidden"]))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(s["hidden"], s["ffn"]))
    w.add_tensor("output_norm.weight", np.ones(s["hidden"], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(str(path) + ".part", path)
    return path


def weight_bytes(path: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors)


def read_bandwidth(threads: int, size: int = 1 << 30) -> float:
    """Bytes/s read from a 1 GiB array by `threads` threads, each reducing its own slice; the best
    of several vectorised kernels (sum, max, count_nonzero, dot) and 5 tries, so that the figure
    is memory-bound rather than limited by one kernel's arithmetic."""
    a = np.ones(size // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    kernels = (np.sum, np.max, lambda p: np.count_nonzero(p.view(np.uint8)), lambda p: np.dot(p, p))
    best = 0.0
    for kernel in kernels:
        for _ in range(5):
            ts = [threading.Thread(target=kernel, args=(p,)) for p in parts]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            best = max(best, a.nbytes / (time.perf_counter() - t0))
    return best


def decode_rate(path: Path, threads: int, n: int = 48) -> tuple[float, int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(b"t1 t2 t3 t4")
    rates = []
    for _ in range(3):
        times = []
        for i, _tok in enumerate(llm.generate(ids, temp=0.0, top_k=1, min_p=0.0, repeat_penalty=1.0)):
            times.append(time.perf_counter())
            if i == n:
                break
        rates.append((len(times) - 2) / (times[-1] - times[1]))  # decode only: after the first token
    ctx = len(ids) + n
    llm.close()
    return statistics.median(rates), ctx


def main() -> list[tuple[str, float, str]]:
    ratio, early, late = tpot_drift()
    print(f"1,000-token generation: tokens 2-101 {early * 1e6:.0f} µs/token, tokens 901-1000 {late * 1e6:.0f} µs/token")
    path = build_realistic_gguf()
    threads = os.cpu_count() or 1
    bw = max(read_bandwidth(threads), read_bandwidth(1))
    rate, ctx = decode_rate(path, threads)
    s = SHAPE
    kv_bytes = 2 * s["layers"] * s["kv_heads"] * (s["hidden"] // s["heads"]) * 2 * ctx / 2  # f16 K and V, mean context
    per_token = weight_bytes(path) + kv_bytes
    print(f"Qwen2.5-0.5B-shaped f16 model: {per_token / 1e9:.3f} GB read per token, {rate:.1f} tokens/s "
          f"-> {rate * per_token / 1e9:.2f} GB/s; memory read bandwidth here {bw / 1e9:.2f} GB/s ({threads} threads)")
    rows = [("late / early TPOT (1,000 tokens, llama.cpp)", ratio, "<= 1.05"),
            ("llama.cpp decode bytes/s / memory bandwidth", rate * per_token / bw, ">= 0.8")]
    return show(rows)


if __name__ == "__main__":
    main()
