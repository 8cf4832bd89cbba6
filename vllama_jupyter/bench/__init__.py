"""Benchmarks on the kernel's engine, with vLLM's metric definitions.

    from vllama_jupyter import bench
    res = bench.run(engine="llamacpp", num_requests=16, concurrency=[1, 2, 4], max_tokens=64)
    res.summary; res.requests; res.plot(); res.to_csv("run1")
"""
from .metrics import Record, describe, summarize
from .runner import BenchResult, compare, run

__all__ = ["run", "compare", "BenchResult", "Record", "summarize", "describe"]
