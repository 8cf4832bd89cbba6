"""What an engine yields (deltas) and what a finished generation is (a Result)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, NamedTuple

from .errors import VllamaError
from .parsing import OutputParser


class TokenLogprob(NamedTuple):
    """One output token: its text, its log-probability, and the most likely alternatives at that
    step as (text, logprob) pairs, most likely first."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    id: int | None = None


class Delta(NamedTuple):
    """A piece of output: new text, the token ids behind it, and when it arrived (perf_counter).
    `usage` is (prompt tokens, output tokens) when a server reports its counts; `logprobs` one
    TokenLogprob per new token when they were asked for. A Stream that parses thinking yields
    its deltas with the thinking moved from `text` to `reasoning`."""

    text: str
    token_ids: tuple[int, ...]
    t: float
    finish_reason: str | None = None
    usage: tuple[int | None, int | None] | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    reasoning: str = ""        # thinking text (parsed from the output, or a server's reasoning field)
    tool_calls: tuple = ()     # a server's streamed tool-call fragments ({index, id, function})


class Timings:
    """vLLM's per-request timings from t_start, first_text_time, delta_times and output_tokens."""

    t_start: float
    first_text_time: float | None
    delta_times: list[float]
    output_tokens: int

    @property
    def ttft(self) -> float | None:
        """Request start -> first delta with text."""
        return None if self.first_text_time is None else self.first_text_time - self.t_start

    @property
    def e2el(self) -> float:
        """Request start -> last delta."""
        return (self.delta_times[-1] if self.delta_times else self.t_start) - self.t_start

    @property
    def tpot(self) -> float | None:
        """(E2EL - TTFT) / (output_tokens - 1)."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)

    @property
    def itl(self) -> list[float]:
        """Gaps between consecutive deltas."""
        return [b - a for a, b in zip(self.delta_times, self.delta_times[1:])]


@dataclass
class Result(Timings):
    """A finished (or stopped) generation with vLLM-style timings, all in seconds."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str
    engine: str
    model: str
    t_start: float
    delta_times: list[float] = field(default_factory=list)
    first_text_time: float | None = None
    usage_tokens: int | None = None   # the count a server reported, when it sent no token ids
    logprobs: list[TokenLogprob] | None = None   # one per output token, when asked for
    context_length: int | None = None
    record: dict = field(default_factory=dict, repr=False)   # how it was made: see Stream.record
    reasoning: str = ""                 # the model's thinking, apart from the answer in `text`
    reasoning_tokens: int = 0           # output tokens spent thinking (of output_tokens)
    tool_calls: list = field(default_factory=list)   # OpenAI-shaped calls the model made
    rounds: list = field(default_factory=list, repr=False)   # earlier results of a tool loop

    @property
    def output_tokens(self) -> int:
        if not self.token_ids and self.usage_tokens is not None:
            return self.usage_tokens
        return len(self.token_ids)

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of decoding, after the first token."""
        tpot = self.tpot
        return None if not tpot else 1.0 / tpot

    @property
    def interrupted(self) -> bool:
        return self.finish_reason in ("interrupted", "cancelled")

    def stats_line(self) -> str:
        ttft = "-" if self.ttft is None else f"{self.ttft * 1000:.0f} ms"
        tps = "-" if self.tokens_per_s is None else f"{self.tokens_per_s:.1f}"
        extra = f" · {self.finish_reason}" if self.finish_reason not in ("stop", "length") else ""
        share = self.context_share
        if share is not None and share > 0.5:
            extra += f" · prompt {share:.0%} of the {self.context_length:,}-token context"
        count = f"{self.output_tokens} tokens"
        if self.reasoning_tokens:
            count += f" ({self.reasoning_tokens} thinking, {self.output_tokens - self.reasoning_tokens} answer)"
        if self.tool_calls:
            extra += f" · {len(self.tool_calls)} tool call{'s' if len(self.tool_calls) > 1 else ''}"
        images = self.record.get("images")
        if images:
            n = self.record.get("image_tokens")
            seen = ", ".join(i["sha256"][:8] for i in images if "sha256" in i)   # which image it saw
            facts = [f"{sum(n)} tokens"] if n else []
            facts += [f"sha256 {seen}"] if seen else []
            extra += f" · {len(images)} image{'s' if len(images) > 1 else ''}" + (f" ({', '.join(facts)})" if facts else "")
        drafts = self.record.get("speculative")
        if drafts and drafts.get("drafted"):
            extra += f" · {drafts['accepted'] / drafts['drafted']:.0%} of {drafts['drafted']} drafted tokens accepted"
        elif drafts and "drafted" in drafts:
            extra += " · no drafts (nothing to look up)"
        adapter = self.record.get("lora")
        model = f"{self.model} + LoRA {adapter['name']}" if adapter else self.model
        return (f"{count} · TTFT {ttft} · {tps} tokens/s · "
                f"{self.engine} · {model}{extra}")

    @property
    def context_share(self) -> float | None:
        """The prompt's share of the context window, when the context length is known."""
        return self.prompt_tokens / self.context_length if self.context_length else None

    def _repr_markdown_(self) -> str:
        think = f"<details><summary>Thinking</summary>\n\n{self.reasoning}\n\n</details>\n\n" if self.reasoning else ""
        return f"{think}{self.text}\n\n*{self.stats_line()}*"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(f"{self.text}\n[{self.stats_line()}]")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        head = self.text if len(self.text) <= 40 else self.text[:40] + "…"
        return f"<Result {head!r} · {self.stats_line()}>"


class Stream:
    """An iterator of Deltas that records them; `.result` is the Result once it ends.

    Nothing runs until the first delta is asked for: `start()` opens the engine's request then,
    after the `on_start` hooks (the session's lock). The `on_end` hooks run exactly once, in a
    `finally`, when the stream ends, is closed, or raises. A source that stops without a finish
    reason is a truncated stream: an error, never a quiet success. Closing it (or dropping it,
    or a KeyboardInterrupt) aborts the request inside the engine.
    """

    def __init__(self, start: Callable[[], Iterator[Delta]], *, prompt_tokens: int, engine: str, model: str,
                 context_length: int | None = None, provenance: Callable[[], dict] | None = None,
                 splitter=None):
        self._start = start
        self.parser = OutputParser(splitter)   # thinking and tool calls apart from the answer
        self.reasoning_parts: list[str] = []
        self.context_length = context_length
        self._provenance = provenance
        self.started_at: datetime | None = None
        self.logprobs: list[TokenLogprob] | None = None
        self._deltas: Iterator[Delta] | None = None
        self.prompt_tokens = prompt_tokens
        self.engine = engine
        self.model = model
        self.t_start = time.perf_counter()
        self.parts: list[str] = []
        self.token_ids: list[int] = []
        self.times: list[float] = []
        self.first_text_time: float | None = None
        self.finish_reason: str | None = None
        self.usage_tokens: int | None = None
        self._starts: list[Callable[[], None]] = []
        self._ends: list[Callable[["Stream"], None]] = []

    def on(self, start: Callable[[], None] | None = None, end: Callable[["Stream"], None] | None = None) -> "Stream":
        """Add hooks: `start()` runs before the request opens (it may refuse by raising);
        `end(stream)` runs once when a started stream finishes in any way."""
        if start:
            self._starts.append(start)
        if end:
            self._ends.append(end)
        return self

    @property
    def started(self) -> bool:
        return self._deltas is not None

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Delta:
        if self.finish_reason is not None:
            raise StopIteration
        if self._deltas is None:
            self._open()
        try:
            d = next(self._deltas)
        except StopIteration:
            self._end("error")
            raise VllamaError(f"the {self.engine} stream ended without a finish reason after "
                              f"{self.output_tokens} tokens: the output is truncated") from None
        except KeyboardInterrupt:
            self._end("interrupted")
            raise
        except BaseException:
            self._end("error")
            raise
        try:
            if self.parser.splitter is not None:
                if d.text and self.first_text_time is None:   # thinking and tool-call markup count as output
                    self.first_text_time = d.t
                d = self.parser.split(d, self.parts)
            self._record(d)
        except KeyboardInterrupt:   # an interrupt can land between two tokens too
            self._end("interrupted")
            raise
        except BaseException:
            self._end("error")
            raise
        if d.finish_reason:
            self._end(d.finish_reason)
        return d

    def _open(self) -> None:
        done = []
        try:
            for hook in self._starts:
                hook()
                done.append(hook)
            self.t_start = time.perf_counter()
            self.started_at = datetime.now(timezone.utc)
            self._deltas = self._start()
        except BaseException:
            if done:  # the hooks that ran own something (the lock): give it back
                self.finish_reason = "error"
                self._run_ends()
            raise

    def _record(self, d: Delta) -> None:
        if d.text or d.token_ids:
            self.times.append(d.t)
        if d.text:
            self.parts.append(d.text)
        if d.reasoning:
            self.reasoning_parts.append(d.reasoning)
        if (d.text or d.reasoning) and self.first_text_time is None:
            self.first_text_time = d.t
        for frag in d.tool_calls:
            self.parser.fragment(frag)
        self.token_ids.extend(d.token_ids)
        if d.logprobs is not None:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(d.logprobs)
        if d.usage:
            prompt, output = d.usage
            if prompt is not None:
                self.prompt_tokens = prompt
            self.usage_tokens = output

    def _end(self, reason: str) -> None:
        if self.finish_reason is not None:
            return
        self.parser.finish()
        self.finish_reason = reason
        try:
            close = getattr(self._deltas, "close", None)  # generators have it, plain iterators not
            if close:
                close()
        finally:
            self._run_ends()

    def _run_ends(self) -> None:
        ends, self._ends = self._ends, []
        errors = []
        for hook in ends:
            try:
                hook(self)
            except BaseException as e:  # every hook runs; the first failure is raised after
                errors.append(e)
        if errors:
            raise errors[0]

    def close(self, reason: str = "cancelled") -> None:
        """Stop generating; the partial output stays in `.result`. A stream never started just ends."""
        if self._deltas is None and self.finish_reason is None:
            self.finish_reason = reason
            self._ends = []
            return
        self._end(reason)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close("interrupted" if exc[0] is KeyboardInterrupt else "cancelled")

    def __del__(self) -> None:
        if self.finish_reason is None and self._deltas is not None:
            try:
                self._end("cancelled")
            except Exception:
                pass

    def __repr__(self) -> str:
        state = self.finish_reason or ("running" if self.started else "not started")
        return f"<vllama Stream {self.engine} · {self.model} · {state} · {self.output_tokens} tokens>"

    @property
    def splitter(self):
        """The reasoning.Splitter that reads this output (None: the text is all answer)."""
        return self.parser.splitter

    @splitter.setter
    def splitter(self, value) -> None:
        self.parser.splitter = value

    @property
    def tool_calls(self) -> list[dict]:
        return self.parser.tool_calls

    @property
    def reasoning_tokens(self) -> int:
        return self.parser.reasoning_tokens

    @property
    def output_tokens(self) -> int:
        if not self.token_ids and self.usage_tokens is not None:
            return self.usage_tokens
        return len(self.token_ids)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    @property
    def thinking(self) -> bool:
        """Whether the model is thinking right now (its thought has begun and no answer yet)."""
        return bool(self.reasoning_parts) and not self.parts

    @property
    def result(self) -> Result:
        return Result(text=self.text, token_ids=list(self.token_ids), prompt_tokens=self.prompt_tokens,
                      finish_reason=self.finish_reason or "running", engine=self.engine,
                      model=self.model, t_start=self.t_start, delta_times=list(self.times),
                      first_text_time=self.first_text_time, usage_tokens=self.usage_tokens,
                      logprobs=None if self.logprobs is None else list(self.logprobs),
                      context_length=self.context_length, record=self.record, reasoning=self.reasoning,
                      reasoning_tokens=self.reasoning_tokens, tool_calls=list(self.tool_calls))

    @property
    def record(self) -> dict:
        """How this output was made: the engine's provenance (engine and version, model and its
        identity, every sampling setting with the seed used, context, hardware, this package's
        version) with the UTC start time and the token counts. JSON-ready."""
        base = self._provenance() if self._provenance else {"engine": self.engine, "model": self.model}
        when = self.started_at.isoformat(timespec="milliseconds") if self.started_at else None
        out = {**base, "timestamp": when, "prompt_tokens": self.prompt_tokens,
               "output_tokens": self.output_tokens, "finish_reason": self.finish_reason}
        if self.reasoning_parts or self.reasoning_tokens:
            out.update(reasoning_tokens=self.reasoning_tokens, reasoning=self.reasoning)
        if self.tool_calls:
            out["tool_calls"] = [dict(c) for c in self.tool_calls]
        return out

    def run(self) -> Result:
        """Drain the stream and return the Result."""
        for _ in self:
            pass
        return self.result


def finished(deltas: list[Delta], *, t_start: float, prompt_tokens: int, engine: str, model: str, **kw) -> Result:
    """The Result of deltas an engine has already collected (a batch)."""
    st = Stream(lambda: iter(deltas), prompt_tokens=prompt_tokens, engine=engine, model=model, **kw)
    result = st.run()
    result.t_start = t_start
    return result
