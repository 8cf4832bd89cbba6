"""Benchmark metrics with vLLM's definitions (benchmarks/benchmark_serving.py there):

TTFT = request start -> first delta with text; E2EL = request start -> last delta;
TPOT = (E2EL - TTFT) / (output tokens - 1) per request; ITL = gaps between consecutive deltas,
pooled over all requests. Throughputs are over the whole run's wall time. Percentiles are numpy's
(linear interpolation), as vLLM reports them. Times in seconds here; tables show milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..result import Timings

STATS = ("mean", "median", "p90", "p99")


@dataclass
class Record(Timings):
    """One request: its start, first-text and delta times (perf_counter seconds) and token counts."""

    t_start: float
    first_text_time: float | None
    delta_times: list[float]
    output_tokens: int
    prompt_tokens: int
    ok: bool = True
    extra: dict = field(default_factory=dict)


def describe(values: list[float]) -> dict[str, float]:
    """mean, median, p90, p99 of `values` (NaN when there are none)."""
    if not values:
        return {k: float("nan") for k in STATS}
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99))}


def summarize(records: list[Record], duration: float) -> dict[str, float]:
    """One run's summary: per-metric stats (in ms) and throughputs."""
    done = [r for r in records if r.ok]
    out: dict[str, float] = {"requests": len(records), "completed": len(done), "duration_s": duration}
    out_tokens = sum(r.output_tokens for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    out["output_tokens"] = out_tokens
    out["input_tokens"] = in_tokens
    out["request_throughput"] = len(done) / duration if duration > 0 else float("nan")
    out["output_throughput"] = out_tokens / duration if duration > 0 else float("nan")
    out["total_token_throughput"] = (in_tokens + out_tokens) / duration if duration > 0 else float("nan")
    series = {
        "ttft": [r.ttft for r in done if r.ttft is not None],
        "tpot": [r.tpot for r in done if r.tpot is not None],
        "itl": [g for r in done for g in r.itl],
        "e2el": [r.e2el for r in done],
    }
    for name, values in series.items():
        for stat, value in describe(values).items():
            out[f"{stat}_{name}_ms"] = value * 1000.0
    return out
