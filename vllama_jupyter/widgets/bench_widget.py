"""The benchmark widget: engines, workload, concurrency levels and request count; Run with a
progress bar, a results table that fills in level by level, plots when done, Export CSV."""
from __future__ import annotations

import threading

import ipywidgets as W

from .. import bench, engines
from ..errors import VllamaError


class BenchWidget:
    def __init__(self):
        local = list(engines.local_installed())
        self.engines = W.SelectMultiple(options=local, value=tuple(local[:1]), description="Engines")
        self.model = W.Text(value="", placeholder="embedded", description="Model")
        self.workload = W.Dropdown(options=[("fixed prompts", "fixed"), ("random tokens", "random")],
                                   value="fixed", description="Workload")
        self.input_len = W.BoundedIntText(value=64, min=2, max=100_000, description="Input tokens")
        self.concurrency = W.Text(value="1,2,4", description="Concurrency")
        self.requests = W.BoundedIntText(value=16, min=1, max=100_000, description="Requests")
        self.max_tokens = W.BoundedIntText(value=64, min=1, max=100_000, description="Max tokens")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.export_button = W.Button(description="Export CSV", icon="save", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="Progress")
        self.status = W.HTML()
        self.table = W.HTML()
        self.plot = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.result = None
        self._thread: threading.Thread | None = None
        self.run_button.on_click(lambda _: self.run())
        self.export_button.on_click(lambda _: self.export())
        self.widget = W.VBox([
            W.HTML("<b>vllama benchmark</b> — vLLM's metric definitions (ms)"),
            W.HBox([self.engines, W.VBox([self.model, self.workload, self.input_len])]),
            W.HBox([self.concurrency, self.requests, self.max_tokens]),
            W.HBox([self.run_button, self.export_button, self.progress]), self.status, self.table, self.plot])
        self.widget.add_class("vllama-bench")

    def levels(self) -> list[int]:
        try:
            levels = [int(x) for x in self.concurrency.value.replace(" ", "").split(",") if x]
        except ValueError:
            levels = []
        if not levels or min(levels) < 1:
            raise VllamaError("concurrency takes whole numbers >= 1 separated by commas, e.g. 1,2,4")
        return levels

    def run(self) -> None:
        """Run every engine at every level in the background (see wait())."""
        try:
            levels = self.levels()
        except VllamaError as e:
            self.status.value = f"<span style='color:#b00020'>{e}</span>"
            return
        if not self.engines.value:
            self.status.value = "<span style='color:#b00020'>choose at least one engine</span>"
            return
        plan = [(e, c) for e in self.engines.value for c in levels]
        self.progress.max, self.progress.value = len(plan), 0
        self.run_button.disabled = True
        self.result = None
        self.plot.value = b""
        self._thread = threading.Thread(target=self._run, args=(plan,), daemon=True)
        self._thread.start()

    def _run(self, plan) -> None:
        try:
            for engine, level in plan:
                self.status.value = f"running {engine} at concurrency {level}…"
                res = bench.run(engine=engine, model=self.model.value.strip() or None,
                                num_requests=self.requests.value, concurrency=level, max_tokens=self.max_tokens.value,
                                input_len=self.input_len.value if self.workload.value == "random" else None)
                self.result = res if self.result is None else self.result + res
                self.table.value = self.result._repr_html_()
                self.progress.value += 1
            self.status.value = "done"
            self.export_button.disabled = False
            import io

            import matplotlib.pyplot as plt

            fig = self.result.plot()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            plt.close(fig)
            self.plot.value = buf.getvalue()
        except VllamaError as e:
            self.status.value = f"<span style='color:#b00020'>{e}</span>"
        except Exception as e:
            self.status.value = f"<span style='color:#b00020'>{type(e).__name__}: {e}</span>"
        finally:
            self.run_button.disabled = False

    def export(self, prefix: str = "vllama_bench") -> list[str]:
        if self.result is None:
            return []
        paths = self.result.to_csv(prefix)
        self.status.value = "wrote " + ", ".join(paths)
        return paths

    def wait(self, timeout: float = 600) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def bench_widget() -> BenchWidget:
    """The benchmark widget (display it, or let the cell show it)."""
    return BenchWidget()
