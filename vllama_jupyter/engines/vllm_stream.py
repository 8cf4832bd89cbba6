"""vLLM requests as our deltas: its outputs as Deltas with logprobs, max_thinking as two requests
(think up to N tokens, close the thought, answer), and cleaning up cancelled requests."""
from __future__ import annotations

import asyncio
import queue
import time

from ..finish import from_wire
from ..reasoning import CLOSE, Splitter
from ..result import Delta, Stream, TokenLogprob
from ..sampling import Sampling

DONE = object()   # the end of a request's queue of outputs


def think_then_answer(eng, prompt: str, s: Sampling, splitter, special: bool) -> Stream:
    """max_thinking: generate at most N tokens; if the model is still thinking then, close the
    thought (as the model would) and go on from there with the rest of max_tokens."""
    ids, s, _ = eng._prepare(prompt, s, special)
    room = min(s.max_tokens, eng.max_model_len - len(ids))
    close = eng.tokenizer.encode(CLOSE[splitter.fmt], add_special_tokens=False)

    def deltas():
        follow = Splitter(splitter.fmt, splitter.state == "reasoning")
        out: list[int] = []
        last = None
        for d in eng._deltas(ids, eng._params(s, min(s.max_thinking, room))):
            follow.feed(d.text)
            out.extend(d.token_ids)
            if d.finish_reason:
                last = d
                break
            yield d
        if last is None or last.finish_reason != "length" or len(out) >= room:
            if last is not None:
                yield last
            return
        extra = close if follow.state == "reasoning" else []
        if len(out) + len(extra) >= room:
            yield last
            return
        yield last._replace(finish_reason=None)
        if extra:
            yield Delta(eng.tokenizer.decode(extra), tuple(extra), time.perf_counter())
        yield from eng._deltas(ids + out + extra, eng._params(s, room - len(out) - len(extra)))
    return eng._new_stream(deltas, len(ids), s, eng.max_model_len)


async def cancel_tasks() -> None:
    """Cancel what vLLM left running on the loop (output handlers) and let it finish."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def as_delta(o, t: float, n: int | None) -> Delta:
    """A Delta from a vLLM CompletionOutput (DELTA kind), with its logprobs when asked for."""
    lp = None
    if n is not None:
        lp = tuple(_logprob(tok, step or {}, n) for tok, step in zip(o.token_ids, o.logprobs or ()))
    return Delta(o.text, tuple(o.token_ids), t, from_wire(o.finish_reason), logprobs=lp)


def _logprob(tok: int, step: dict, n: int) -> TokenLogprob:
    """vLLM's {token id: Logprob(logprob, rank, decoded_token)} for one step."""
    chosen = step.get(tok)
    ranked = sorted((lp.rank, lp.decoded_token or "", lp.logprob) for lp in step.values() if lp.rank and lp.rank <= n)
    return TokenLogprob(chosen.decoded_token or "" if chosen else "", float(chosen.logprob) if chosen else float("nan"),
                        tuple((text, float(v)) for _, text, v in ranked[:n]), tok)


def drain(q: queue.Queue, timeout: float = 10.0) -> None:
    """Wait until the cancelled request's task has finished (its abort has been sent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if q.get(timeout=max(0.01, deadline - time.monotonic())) is DONE:
                return
        except queue.Empty:
            return
