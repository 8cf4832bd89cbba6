"""Static matplotlib figures of a benchmark: they render anywhere (nbviewer, GitHub, PDF)."""
from __future__ import annotations


def plot(result):
    """Latency percentiles and throughput against concurrency (or request rate), and the TTFT
    distribution, one line or histogram per engine (or server) and model."""
    import matplotlib.pyplot as plt

    s, r = result.summary, result.requests
    x = "request_rate" if s["concurrency"].isna().all() else "concurrency"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for (name, model), g in s.groupby(["label", "model"], sort=False):
        g = g.sort_values(x)
        label = f"{name} · {model}"
        for stat, style in (("median", "-o"), ("p99", "--x")):
            axes[0].plot(g[x], g[f"{stat}_tpot_ms"], style, label=f"{label} TPOT {stat}")
            axes[0].plot(g[x], g[f"{stat}_ttft_ms"], style, alpha=0.6, label=f"{label} TTFT {stat}")
        axes[1].plot(g[x], g["output_throughput"], "-o", label=label)
        ttft = r[(r.label == name) & (r.model == model)]["ttft_ms"].dropna()
        axes[2].hist(ttft, bins=20, alpha=0.6, label=label)
    axes[0].set(title="Latency", xlabel=x, ylabel="ms")
    axes[1].set(title="Output throughput", xlabel=x, ylabel="tokens/s")
    axes[2].set(title="TTFT distribution", xlabel="ms", ylabel="requests")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

