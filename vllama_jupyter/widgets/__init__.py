"""ipywidgets front ends on the kernel's one session: the engine panel and the benchmark widget."""
from .bench_widget import BenchWidget, bench_widget
from .panel import Panel, panel

__all__ = ["panel", "Panel", "bench_widget", "BenchWidget"]
