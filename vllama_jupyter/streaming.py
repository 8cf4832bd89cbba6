"""Showing a generation as it streams: throttled display-handle updates in Jupyter, plain
stdout in a terminal. One display handle per cell; no widget per token."""
from __future__ import annotations

import json
import sys
import time

from .result import Result, Stream

FORMATS = ("text", "markdown", "code", "json", "tokens")
DIM, UNDIM = "\x1b[2m", "\x1b[22m"   # the thinking, dimmed, in a terminal


def in_jupyter(shell=None) -> bool:
    """True when a Jupyter frontend shows our display data (an ipykernel kernel is running)."""
    if shell is None:
        try:
            from IPython import get_ipython
            shell = get_ipython()
        except ImportError:
            return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def bundle(text: str, fmt: str, final: bool = False, logprobs=None, reasoning: str = "") -> dict:
    """The MIME bundle showing `text` in format `fmt` (`tokens` shows `logprobs`). The model's
    thinking, when there is any, comes first in a dimmed block, open while the model thinks and
    folded once the answer starts."""
    data = {"text/plain": text}
    if reasoning:
        return thinking_bundle(text, fmt, reasoning, final, logprobs)
    if fmt == "tokens":
        from .tokenview import tokens_html
        data["text/html"] = tokens_html(logprobs, text)
    elif fmt == "markdown":
        data["text/markdown"] = text
    elif fmt == "code":
        data["text/markdown"] = f"```\n{text}\n```"
    elif fmt == "json" and final:
        try:
            data["application/json"] = json.loads(text)
        except ValueError:
            pass
    return data


def thinking_bundle(text: str, fmt: str, reasoning: str, final: bool, logprobs) -> dict:
    import html

    folded = bool(text.strip()) or final
    label = "Thinking" if folded else "Thinking…"
    block = (f"<details class='vllama-thinking'{'' if folded else ' open'}><summary>{label}</summary>"
             f"<div style='opacity:0.65;white-space:pre-wrap;border-left:3px solid currentColor;padding-left:8px;"
             f"margin:4px 0'>{html.escape(reasoning.strip())}</div></details>")
    plain = f"Thinking:\n{reasoning.strip()}\n\n{text}" if reasoning.strip() else text
    data = {"text/plain": plain}
    if fmt == "markdown":
        data["text/markdown"] = f"{block}\n\n{text}"
        return data
    answer = bundle(text, fmt, final, logprobs)
    inner = answer.get("text/html") or f"<pre style='white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>"
    data["text/html"] = block + inner
    if "application/json" in answer:
        data["application/json"] = answer["application/json"]
    return data


class Renderer:
    """Consumes a Stream and shows it. `throttle` is the least time between display updates."""

    def __init__(self, fmt: str = "text", throttle: float = 0.1, live: bool = True, jupyter: bool | None = None):
        self.fmt = fmt
        self.throttle = throttle
        self.live = live
        self.jupyter = in_jupyter() if jupyter is None else jupyter
        self.handle = None
        self.updates = 0

    def run(self, stream: Stream) -> Result:
        """Show the stream to its end (or until interrupted, which is re-raised after the final
        update). Whatever goes wrong while showing it, the stream is closed: the engine is freed."""
        try:
            if self.jupyter:
                self._jupyter(stream)
            else:
                self._terminal(stream)
        except KeyboardInterrupt:
            stream.close("interrupted")
            self._final(stream)
            raise
        finally:
            stream.close("error")  # a no-op when it has ended
        self._final(stream)
        return stream.result

    def _jupyter(self, stream: Stream) -> None:
        from IPython.display import display

        if self.live:
            self.handle = display(bundle("", self.fmt), raw=True, display_id=True)
        if self.handle is None:
            for _ in stream:
                pass
            return
        clock, throttle = time.perf_counter, self.throttle
        next_update = clock() + throttle
        for d in stream:
            if (d.text or d.reasoning) and clock() >= next_update:
                self.handle.update(bundle(stream.text, self.fmt, logprobs=stream.logprobs, reasoning=stream.reasoning),
                                   raw=True)
                self.updates += 1
                next_update = clock() + throttle

    def _terminal(self, stream: Stream) -> None:
        thinking = False
        for d in stream:
            if not self.live:
                continue
            if d.reasoning:
                if not thinking:
                    sys.stdout.write(DIM + "Thinking: ")
                    thinking = True
                sys.stdout.write(d.reasoning)
            if d.text:
                if thinking:
                    sys.stdout.write(UNDIM + "\n\n")
                    thinking = False
                sys.stdout.write(d.text)
            if d.text or d.reasoning:
                sys.stdout.flush()
        if thinking:
            sys.stdout.write(UNDIM)

    def _final(self, stream: Stream) -> None:
        """The whole output, with how it was made in the display metadata (key `vllama`), so a
        saved notebook keeps each output's record."""
        text = stream.text
        if self.jupyter:
            from IPython.display import display

            data = bundle(text, self.fmt, final=True, logprobs=stream.logprobs, reasoning=stream.reasoning)
            meta = {"vllama": stream.record}
            if self.handle is not None:
                self.handle.update(data, raw=True, metadata=meta)
                self.updates += 1
            else:
                display(data, raw=True, metadata=meta)
        elif self.live:
            sys.stdout.write("\n")
        else:
            if stream.reasoning.strip():
                sys.stdout.write(f"{DIM}Thinking: {stream.reasoning.strip()}{UNDIM}\n\n")
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
