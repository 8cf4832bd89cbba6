"""Run benchmarks on the kernel's engine: warm-up, concurrency levels or Poisson request rates,
metrics with vLLM's definitions, results as pandas DataFrames with the facts needed to compare."""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import VllamaError
from ..options import Option
from ..sampling import Sampling
from . import workloads
from .metrics import Record, summarize


@dataclass
class BenchResult:
    """`.summary`: one row per run (engine, model, level); `.requests`: one row per request;
    `.meta`: hardware, engine versions, model, settings."""

    summary: "object"
    requests: "object"
    meta: dict = field(default_factory=dict)

    def to_csv(self, prefix: str) -> list[str]:
        """Write PREFIX_summary.csv, PREFIX_requests.csv and PREFIX_meta.json; return the paths."""
        paths = [f"{prefix}_summary.csv", f"{prefix}_requests.csv", f"{prefix}_meta.json"]
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        self.summary.to_csv(paths[0], index=False)
        self.requests.to_csv(paths[1], index=False)
        with open(paths[2], "w") as f:
            json.dump(self.meta, f, indent=2, default=str)
        return paths

    def to_json(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump({"meta": self.meta, "summary": self.summary.to_dict("records"),
                       "requests": self.requests.to_dict("records")}, f, indent=2, default=str)
        return path

    def plot(self):
        from .plots import plot
        return plot(self)

    def table(self):
        """The summary's main columns, for display."""
        cols = [c for c in ("engine", "label", "model", "concurrency", "request_rate", "completed", "output_throughput",
                            "request_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
                            "p99_tpot_ms", "median_itl_ms", "median_e2el_ms", "peak_memory_mb") if c in self.summary]
        return self.summary[cols]

    def _repr_html_(self) -> str:
        return self.table().to_html(index=False, float_format=lambda x: f"{x:,.2f}")

    def __add__(self, other: "BenchResult") -> "BenchResult":
        import pandas as pd

        meta = {**self.meta, "runs": self.meta.get("runs", [self.meta]) + other.meta.get("runs", [other.meta])}
        return BenchResult(pd.concat([self.summary, other.summary], ignore_index=True),
                           pd.concat([self.requests, other.requests], ignore_index=True), meta)


class _PeakMemory:
    """Samples the RSS of this process and its children (engine processes) in the background."""

    def __init__(self, every: float = 0.05):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for c in self.proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _one(engine, prompt, sampling: Sampling, delay_until: float | None = None) -> Record:
    if delay_until is not None:
        time.sleep(max(0.0, delay_until - time.perf_counter()))
    try:
        res = engine.stream(prompt, sampling).run()
    except VllamaError as e:
        return Record(time.perf_counter(), None, [], 0, 0, ok=False, extra={"error": str(e)})
    return Record(res.t_start, res.first_text_time, res.delta_times, res.output_tokens, res.prompt_tokens,
                  extra={"finish_reason": res.finish_reason})


def _run_level(engine, prompts: list, sampling: Sampling, concurrency: int, rate: float | None, seed: int):
    workers = concurrency if engine.capabilities().concurrent else 1
    t0 = time.perf_counter()
    if rate:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, len(prompts))
        arrivals = t0 + np.cumsum(gaps) - gaps[0]
        workers = len(prompts) if engine.capabilities().concurrent else 1
        with ThreadPoolExecutor(max_workers=min(workers, 256)) as pool:
            records = list(pool.map(lambda pa: _one(engine, pa[0], sampling, pa[1]), zip(prompts, arrivals)))
    elif workers == 1:
        records = [_one(engine, p, sampling) for p in prompts]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            records = list(pool.map(lambda p: _one(engine, p, sampling), prompts))
    return records, time.perf_counter() - t0, workers


def run(engine: str | None = None, model: str | None = None, num_requests: int = 16,
        concurrency: int | list[int] = 1, max_tokens: int = 64, request_rate: float | list[float] | None = None,
        prompts=None, input_len: int | None = None, warmup: int = 2, ignore_eos: bool | None = None,
        temperature: float = 0.0, seed: int = 0, label: str | None = None, **load_options) -> BenchResult:
    """Benchmark the kernel's engine (loading `model` on `engine` first when they are given).

    Levels: each concurrency in `concurrency`, or each Poisson rate (requests/s) in `request_rate`.
    Workload: `prompts` (list or DataFrame column), else random token prompts of `input_len`
    tokens, else a fixed list. Every request asks for `max_tokens` (ignore_eos, by default wherever
    the engine takes it, so engines produce equal counts). Engines that cannot run requests together (llama.cpp
    loaded with parallel=1) run them in turn at every level; the summary says so in `concurrent`. `label` names
    the rows (default: the engine, or the kind of server the openai engine talks to)."""
    import pandas as pd

    from ..about import __version__
    from ..hardware import hardware
    from ..session import get_session

    num_requests = Option("num_requests", "int", 16, "requests per level", low=1).check(num_requests)
    levels = [request_rate] if isinstance(request_rate, (int, float)) else list(request_rate or [])
    conc = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    if not conc:
        raise VllamaError("concurrency must be a whole number >= 1 or a list of them (got an empty list)")
    conc = [Option("concurrency", "int", 1, "requests at once", low=1).check(c) for c in conc]
    if any(not isinstance(r, (int, float)) or r <= 0 for r in levels):
        raise VllamaError(f"request_rate must be a positive number of requests/s (got {request_rate!r})")
    sampling = Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed,
                        ignore_eos=True if ignore_eos is None else ignore_eos)

    session = get_session()
    eng = session.ensure(model, engine, **load_options)
    if ignore_eos is None:   # wherever the engine takes it
        ignore_eos = eng.capabilities().ignore_eos
        sampling = replace(sampling, ignore_eos=ignore_eos)
    if prompts is not None:
        work = workloads.from_items(prompts, num_requests)
    elif input_len:
        work = workloads.random_tokens(eng, num_requests, input_len, seed)
    else:
        work = workloads.fixed(num_requests)

    info = eng.info()
    label = label or (info["engine"] if eng.capabilities().in_process else info["version"])
    rows, req_rows = [], []
    with session.hold("generating"):
        for p in work[:warmup]:
            _one(eng, p, sampling)
        plan = [(1, r) for r in levels] if levels else [(c, None) for c in conc]
        for c, rate in plan:
            with _PeakMemory() as mem:
                records, duration, workers = _run_level(eng, work, sampling, c, rate, seed)
            s = summarize(records, duration)
            s.update({"engine": info["engine"], "label": label, "model": info["model"], "concurrency": c if not rate else None,
                      "request_rate": rate, "concurrent": workers > 1,
                      "max_tokens": max_tokens, "load_s": info.get("load_seconds"), "peak_memory_mb": mem.peak / 2**20})
            rows.append(s)
            for i, r in enumerate(records):
                req_rows.append({"engine": info["engine"], "label": label, "model": info["model"], "concurrency": s["concurrency"],
                                 "request_rate": rate, "request": i, "ok": r.ok, "prompt_tokens": r.prompt_tokens,
                                 "output_tokens": r.output_tokens,
                                 "ttft_ms": None if r.ttft is None else r.ttft * 1000,
                                 "tpot_ms": None if r.tpot is None else r.tpot * 1000, "e2el_ms": r.e2el * 1000,
                                 "itl_mean_ms": float(np.mean(r.itl)) * 1000 if r.itl else None,
                                 "finish_reason": r.extra.get("finish_reason", r.extra.get("error"))})
    first = ["engine", "label", "model", "concurrency", "request_rate"]
    summary = pd.DataFrame(rows)
    summary = summary[first + [c for c in summary.columns if c not in first]]
    hw = hardware()
    meta = {"vllama_jupyter": __version__, "engine": info, "hardware": hw.summary(), "gpus": [g.describe() for g in hw.gpus],
            "num_requests": num_requests, "max_tokens": max_tokens, "ignore_eos": ignore_eos,
            "temperature": temperature, "seed": seed, "warmup": warmup, "input_len": input_len,
            "metrics": "vLLM definitions: TTFT, TPOT=(E2EL-TTFT)/(out-1), ITL pooled, E2EL; ms",
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    return BenchResult(summary, pd.DataFrame(req_rows), meta)


def compare(configs: list[dict], **common) -> BenchResult:
    """Run several configurations (each a dict of run() arguments, e.g. {"engine": "vllm"}) with
    the same `common` settings; one result with all their rows."""
    if not configs:
        raise VllamaError("compare needs at least one configuration, e.g. [{'engine': 'llamacpp'}]")
    out = None
    for cfg in configs:
        res = run(**{**common, **cfg})
        out = res if out is None else out + res
    return out
