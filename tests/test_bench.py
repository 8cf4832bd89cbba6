"""Benchmark metrics on recorded timestamps (hand-computed), and real short runs."""
import math

import pytest

from vllama_jupyter import bench
from vllama_jupyter.bench.metrics import Record, describe, summarize
from vllama_jupyter.errors import VllamaError

from .helpers import as_the_session, needs_vllm


def test_metrics_match_hand_computation():
    # request A: start 0, deltas at 0.10 (first text), 0.15, 0.25 -> 3 tokens
    # request B: start 0.05, deltas at 0.35, 0.45 -> 2 tokens, plus prompt tokens 4 and 6
    a = Record(0.0, 0.10, [0.10, 0.15, 0.25], 3, 4)
    b = Record(0.05, 0.35, [0.35, 0.45], 2, 6)
    assert a.ttft == pytest.approx(0.10) and b.ttft == pytest.approx(0.30)
    assert a.e2el == pytest.approx(0.25) and b.e2el == pytest.approx(0.40)
    assert a.tpot == pytest.approx((0.25 - 0.10) / 2) and b.tpot == pytest.approx(0.10)
    s = summarize([a, b], duration=0.5)
    assert s["completed"] == 2 and s["output_tokens"] == 5 and s["input_tokens"] == 10
    assert s["request_throughput"] == pytest.approx(4.0)
    assert s["output_throughput"] == pytest.approx(10.0)
    assert s["total_token_throughput"] == pytest.approx(30.0)
    assert s["mean_ttft_ms"] == pytest.approx(200.0) and s["median_ttft_ms"] == pytest.approx(200.0)
    assert s["p90_ttft_ms"] == pytest.approx(280.0)  # 100 + 0.9 * (300 - 100)
    # ITL pooled: A gives 50 and 100 ms, B gives 100 ms
    assert s["mean_itl_ms"] == pytest.approx(250.0 / 3)
    assert s["median_itl_ms"] == pytest.approx(100.0)
    assert s["mean_tpot_ms"] == pytest.approx((75.0 + 100.0) / 2)
    assert s["p99_e2el_ms"] == pytest.approx(250.0 + 0.99 * 150.0)


def test_single_token_and_failed_requests_are_left_out_where_undefined():
    one = Record(0.0, 0.2, [0.2], 1, 3)
    failed = Record(0.0, None, [], 0, 0, ok=False)
    s = summarize([one, failed], duration=1.0)
    assert s["completed"] == 1 and s["requests"] == 2
    assert math.isnan(s["mean_tpot_ms"]) and math.isnan(s["mean_itl_ms"])
    assert s["mean_ttft_ms"] == pytest.approx(200.0)
    assert math.isnan(describe([])["p99"])


def test_real_llamacpp_run(session, tmp_path):
    res = bench.run(engine="llamacpp", num_requests=6, concurrency=[1, 2], max_tokens=12, warmup=1)
    s, r = res.summary, res.requests
    assert list(s["concurrency"]) == [1, 2] and (s["completed"] == 6).all()
    assert list(s["concurrent"]) == [False, True]  # llama.cpp decodes requests that come together together
    assert (r["output_tokens"] == 12).all() and len(r) == 12
    assert (r["ttft_ms"] <= r["e2el_ms"]).all() and (s["median_ttft_ms"] <= s["median_e2el_ms"]).all()
    assert (s["output_tokens"] == 72).all() and (s["output_throughput"] > 0).all()
    assert s["peak_memory_mb"].min() > 10
    assert res.meta["engine"]["engine"] == "llamacpp" and "CPU:" in res.meta["hardware"]
    paths = res.to_csv(str(tmp_path / "run"))
    assert all((tmp_path / p.split("/")[-1]).exists() for p in paths)
    fig = res.plot()
    assert len(fig.axes) == 3
    fig.savefig(tmp_path / "plot.png")
    assert "median_ttft_ms" in res._repr_html_()


def test_random_token_prompts_and_rate_mode(session):
    res = bench.run(engine="llamacpp", num_requests=4, max_tokens=5, input_len=32, request_rate=50.0, warmup=0)
    assert (res.requests["prompt_tokens"] == 32).all()
    assert res.summary["request_rate"].tolist() == [50.0]


def test_bad_bench_arguments(session):
    for kwargs, words in (({"num_requests": 0}, "num_requests must be"), ({"concurrency": 0}, "concurrency must be"),
                          ({"request_rate": -1}, "request_rate must be"), ({"max_tokens": 0}, "max_tokens must be")):
        with pytest.raises(VllamaError, match=words):
            bench.run(**kwargs)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_real_vllm_run_runs_requests_together(vllm_session):
    with as_the_session(vllm_session()):   # the run's vLLM engine of the embedded model (conftest)
        res = bench.run(engine="vllm", num_requests=8, concurrency=[1, 4], max_tokens=16, warmup=1)
    s = res.summary
    assert s["concurrent"].tolist() == [False, True]
    assert (s["completed"] == 8).all() and (res.requests["output_tokens"] == 16).all()
    assert (s["median_ttft_ms"] <= s["median_e2el_ms"]).all()
