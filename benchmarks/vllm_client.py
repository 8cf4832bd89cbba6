"""vLLM's own serving benchmark client (`vllm.benchmarks.serve`, the code behind `vllm bench
serve`) against an OpenAI-compatible endpoint: random prompts, a fixed concurrency. Used by the
tests against a shared engine and by bench_vllm.py. The key comes from $OPENAI_API_KEY, as the
client reads it."""
from __future__ import annotations

import argparse
from pathlib import Path


def run_vllm_client(url: str, model: str, tokenizer: str, outdir, prompts: int = 16, concurrency: int = 4,
                    input_len: int = 32, output_len: int = 32) -> dict:
    """Run the client once; its figures (medians in ms) and the line that says them."""
    from vllm.benchmarks.serve import add_cli_args, main

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", url.removesuffix("/v1"), "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", str(input_len), "--random-output-len", str(output_len), "--num-prompts", str(prompts),
        "--max-concurrency", str(concurrency), "--ignore-eos", "--temperature", "0", "--seed", "0",
        "--save-result", "--result-dir", str(Path(outdir)), "--disable-tqdm"])
    r = main(args)
    out = {"completed": r["completed"], "failed": r.get("failed", prompts - r["completed"]),
           "median_ttft_ms": r["median_ttft_ms"], "median_tpot_ms": r["median_tpot_ms"],
           "p99_ttft_ms": r["p99_ttft_ms"], "output_throughput": r["output_throughput"]}
    out["line"] = (f"vllm bench serve against {url}: {out['completed']}/{prompts} requests at concurrency "
                   f"{concurrency}, TTFT median {out['median_ttft_ms']:.1f} ms (p99 {out['p99_ttft_ms']:.1f}), "
                   f"TPOT median {out['median_tpot_ms']:.1f} ms, {out['output_throughput']:.1f} output tokens/s")
    return out
