"""`-f tokens`: the output as HTML, each token shaded by how unlikely it was and its alternatives
on hover. The shade is a translucent background over the theme's own text colour, so it reads in
JupyterLab's light and dark themes alike."""
from __future__ import annotations

import html
import math

from .result import TokenLogprob

STYLE = ("<style>.vllama-tokens{white-space:pre-wrap;font-family:var(--jp-code-font-family,monospace);"
         "font-size:var(--jp-code-font-size,13px);line-height:1.6}"
         ".vllama-tokens span{border-radius:3px;cursor:help}"
         ".vllama-tokens-key{font-size:11px;opacity:.75;margin-top:4px}</style>")


def shade(p: float) -> str:
    """The background of a token with probability p: clear when certain, orange as p falls."""
    alpha = 0.08 + 0.62 * (1.0 - p) if p < 0.98 else 0.0
    return f"rgba(255,140,0,{alpha:.2f})"


def tip(t: TokenLogprob) -> str:
    lines = [f"{t.token!r}  p={math.exp(t.logprob):.3f}  logprob={t.logprob:.3f}"]
    lines += [f"{'→' if text == t.token else ' '} {text!r}  {math.exp(lp):.3f}" for text, lp in t.top]
    return "\n".join(lines)


def tokens_html(logprobs: list[TokenLogprob] | None, fallback: str = "") -> str:
    """The HTML for these tokens (the plain text escaped when there are none yet)."""
    if not logprobs:
        return f"{STYLE}<div class='vllama-tokens'>{html.escape(fallback)}</div>"
    spans = [f"<span style='background:{shade(math.exp(t.logprob))}' title='{html.escape(tip(t), quote=True)}'>"
             f"{html.escape(t.token)}</span>" for t in logprobs]
    mean = sum(t.logprob for t in logprobs) / len(logprobs)
    key = (f"<div class='vllama-tokens-key'>{len(logprobs)} tokens · mean logprob {mean:.2f} · "
           f"perplexity {math.exp(-mean):.2f} · shade: less likely → more orange · hover for alternatives</div>")
    return f"{STYLE}<div class='vllama-tokens'>{''.join(spans)}</div>{key}"
