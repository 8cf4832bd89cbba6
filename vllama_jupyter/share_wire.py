"""The OpenAI API's request and reply bodies for the shared engine: a generation request read
and checked (Plan), and the choices, chunks, usage and logprobs written back as the `openai`
client reads them."""
from __future__ import annotations

import time
import uuid

from .errors import VllamaError
from .options import Option
from .finish import to_wire
from .options import check_fields, from_openai
from .sampling import Sampling

MAX_N = 64   # the most choices one request may ask for
N = Option("n", "int", 1, "choices to generate", low=1, high=MAX_N, optional=True)


def adapters_of(eng) -> tuple:
    """The names of the adapters the engine behind the share has added (model names of their own)."""
    return eng.capabilities().adapters if eng is not None else ()


class Plan:
    """One generation request read and checked: its prompts or messages, n, sampling per choice."""

    def __init__(self, body: dict, chat: bool, adapters: tuple = ()):
        check_fields(body)
        self.chat = chat
        n = N.check(body.get("n", 1)) or 1
        given = from_openai(body, chat)
        if body.get("model") in adapters:   # an adapter is a model name of its own, as vLLM serves them
            given.setdefault("lora", body["model"])
        self.sampling = Sampling.make(**given)
        opts = body.get("stream_options")
        if opts is not None and (not body.get("stream") or not isinstance(opts, dict)):
            raise VllamaError("stream_options goes with stream=true, as {'include_usage': true}")
        self.include_usage = bool((opts or {}).get("include_usage"))
        if chat:
            from .messages import check_messages

            self.messages = check_messages(body.get("messages"))
            self.tools = _tools(body.get("tools"))
            self.prompts = [None]
        else:
            self.prompts = _prompts(body.get("prompt"))
        self.n = n
        self.count = n * len(self.prompts)
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.kind = "chat.completion" if chat else "text_completion"
        self.created = int(time.time())

    def sampling_of(self, i: int) -> Sampling:
        """Choice i's sampling: with a seed, choice j of a prompt uses seed + j (repeatable, and
        the choices differ)."""
        j = i % self.n
        if self.sampling.seed is None or j == 0:
            return self.sampling
        return Sampling.make(self.sampling, seed=(self.sampling.seed + j) % 2**32)

    def open(self, eng, i: int):
        s = self.sampling_of(i)
        if self.chat:
            return eng.chat(self.messages, s, self.tools)
        return eng.stream(self.prompts[i // self.n], s)

    def whole_choice(self, i: int, result) -> dict:
        choice = {"index": i, "finish_reason": to_wire(result.finish_reason), "token_ids": result.token_ids,
                  "logprobs": logprobs(result.logprobs, self.chat) if result.logprobs is not None else None}
        if self.chat:
            msg = {"role": "assistant", "content": result.text}
            if result.reasoning:
                msg["reasoning_content"] = result.reasoning
            if result.tool_calls:
                msg["tool_calls"] = result.tool_calls
                choice["finish_reason"] = "tool_calls"
            choice["message"] = msg
        else:
            choice["text"] = result.text
        return choice

    def chunk(self, i: int, stream, held: list, done: bool, first: bool) -> dict:
        reason = next((d.finish_reason for d in held if d.finish_reason), None) if done else None
        if done and reason is None:
            reason = stream.finish_reason
        choice: dict = {"index": i, "finish_reason": None, "token_ids": [t for d in held for t in d.token_ids]}
        text = "".join(d.text for d in held)
        if self.chat:
            delta: dict = {"role": "assistant"} if first else {}
            delta["content"] = text
            thought = "".join(d.reasoning for d in held)
            if thought:
                delta["reasoning_content"] = thought
            if done and stream.tool_calls:
                delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(stream.tool_calls)]
                reason = "tool_calls"
            choice["delta"] = delta
        else:
            choice["text"] = text
        if done:
            choice["finish_reason"] = to_wire(reason)
        if held and held[0].logprobs is not None:
            choice["logprobs"] = logprobs([t for d in held for t in d.logprobs or ()], self.chat)
        return {"id": self.id, "object": f"{self.kind}.chunk" if self.chat else self.kind, "created": self.created,
                "model": stream.model, "choices": [choice]}


def _prompts(p) -> list:
    """A completion's prompts: text, a list of token ids, or a list of texts (one choice set each)."""
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        return [p]
    if isinstance(p, list) and p and all(isinstance(t, str) for t in p):
        return list(p)
    raise VllamaError(f"the prompt must be text, a list of texts or a list of token ids (got {type(p).__name__})")


def _tools(tools):
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") for t in tools):
        raise VllamaError("tools must be a list of {'type': 'function', 'function': {'name': ..., 'parameters': ...}}")
    return tools or None


def usage(prompt: int, output: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def logprobs(items, chat: bool) -> dict:
    if chat:
        return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                             "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(a.encode())}
                                              for a, lp in t.top]} for t in items]}
    offsets, at = [], 0
    for t in items:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [dict(t.top) for t in items], "text_offset": offsets}
