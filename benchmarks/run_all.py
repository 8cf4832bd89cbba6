"""Every performance ratio of vllama-jupyter, measured in one run on this machine, as one table.

    .venv/bin/python benchmarks/run_all.py            # about 3-5 minutes on 2 CPU cores

Each ratio compares two things measured in the same run (never a number against a constant), so a
busy machine shifts both sides alike. What each means: see the docstrings of the bench_*.py files
and the README's "Performance" section.
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("bench_magic", "bench_remote", "bench_decode", "bench_vllm")


def main() -> int:
    rows, failed = [], []
    t0 = time.perf_counter()
    for name in PARTS:
        print(f"\n== {name} ==", flush=True)
        try:
            rows += importlib.import_module(name).main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    print(f"\n{'ratio':48s} {'value':>7s}   goal")
    print("-" * 70)
    for label, value, goal in rows:
        print(f"{label:48s} {value:7.2f}   {goal}")
    print(f"\n{len(rows)} ratios in {time.perf_counter() - t0:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
