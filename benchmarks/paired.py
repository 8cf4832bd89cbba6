"""Interleaved, paired measurement: the one way every two-sided ratio here is measured.

A and B run alternately, after warm-up runs that are thrown away: A B, then B A, then A B, ...
(so neither side always runs right after the other). Each pair gives one ratio, so drift of a
shared machine lands on both sides of a pair alike. A ratio is reported as the median of its pairs
with their spread (quartiles and min-max) and the number of pairs.

`settle` waits between runs: llama.cpp's worker threads spin for a while after their work, and
on two cores the next run, in another process, would pay for it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Ratio:
    """One reported ratio: `pairs` holds (a, b, a/b) of every pair."""

    name: str
    goal: str                      # e.g. ">= 0.97"
    unit: str = ""                 # what a and b are (e.g. "tokens/s")
    pairs: list[tuple[float, float, float]] = field(default_factory=list)
    note: str = ""                 # a derived figure worth printing (e.g. µs/token added)

    @property
    def values(self) -> list[float]:
        return [r for _, _, r in self.pairs]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def quartiles(self) -> tuple[float, float]:
        v = self.values
        if len(v) < 2:
            return v[0], v[0]
        q = statistics.quantiles(v, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def met(self) -> bool:
        op, target = self.goal.split()
        return self.median >= float(target) if op == ">=" else self.median <= float(target)

    def row(self) -> dict:
        """Plain Python numbers (a part may measure with numpy), so the row writes as JSON."""
        q1, q3 = self.quartiles
        return {"ratio": self.name, "median": float(self.median), "q1": float(q1), "q3": float(q3),
                "min": float(min(self.values)), "max": float(max(self.values)), "pairs": len(self.pairs),
                "goal": self.goal, "met": bool(self.met), "unit": self.unit, "note": self.note}

    def to_dict(self) -> dict:
        return {**self.row(), "every_pair": [dict(zip(("a", "b", "a_over_b"), map(float, p))) for p in self.pairs]}

    def line(self) -> str:
        q1, q3 = self.quartiles
        mark = "met" if self.met else "NOT met"
        return (f"{self.name:52s} {self.median:7.3f}  IQR {q1:.3f}-{q3:.3f}  range {min(self.values):.3f}-"
                f"{max(self.values):.3f}  n={len(self.pairs):<3d} goal {self.goal:8s} {mark}"
                + (f"  ({self.note})" if self.note else ""))


def paired(name: str, goal: str, a: Callable[[], float], b: Callable[[], float], pairs: int,
           warmup: int = 1, unit: str = "", settle: float = 0.2) -> Ratio:
    """Run `a` and `b` alternately `pairs` times after `warmup` discarded pairs; one ratio a / b
    per pair."""
    def run(fn: Callable[[], float]) -> float:
        time.sleep(settle)
        return fn()

    for _ in range(warmup):
        run(a), run(b)
    out = Ratio(name, goal, unit)
    for i in range(pairs):
        if i % 2:
            y = run(b)
            x = run(a)
        else:
            x = run(a)
            y = run(b)
        out.pairs.append((x, y, x / y))
    return out


def show(ratios: list[Ratio]) -> list[Ratio]:
    for r in ratios:
        print(r.line(), flush=True)
    return ratios


