"""One streamed chunk of an OpenAI-compatible server, read into Deltas with every field's shape
checked: a server that answers garbage gets one clear line, never a traceback."""
from __future__ import annotations

import json
import math
import time

from ..result import Delta, TokenLogprob


class Malformed(ValueError):
    """What is wrong with a chunk, in words ("a choice that is a str, not an object")."""


def whole(x) -> bool:
    return x is None or (isinstance(x, int) and not isinstance(x, bool) and x >= 0)


def parse_chunk(data: str, chat: bool, logprobs: int | None) -> list[Delta]:
    """The deltas in one chunk. Raises Malformed (shape), ValueError (not JSON) or
    ServerError (the server reported an error)."""
    now = time.perf_counter()
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise Malformed(f"a chunk that is a {type(chunk).__name__}, not an object")
    if "error" in chunk:
        raise ServerError(json.dumps(chunk))
    out = []
    usage = chunk.get("usage")
    if usage is not None:
        if not isinstance(usage, dict) or not all(whole(usage.get(k)) for k in ("prompt_tokens", "completion_tokens")):
            raise Malformed(f"usage {usage!r:.60} without whole-number token counts")
        out.append(Delta("", (), now, usage=(usage.get("prompt_tokens"), usage.get("completion_tokens"))))
    choices = chunk.get("choices", [])
    if not isinstance(choices, list):
        raise Malformed(f"choices that are a {type(choices).__name__}, not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            raise Malformed(f"a choice that is a {type(choice).__name__}, not an object")
        part = choice.get("delta") if chat else choice
        if chat and part is not None and not isinstance(part, dict):
            raise Malformed(f"a delta that is a {type(part).__name__}, not an object")
        text = (part or {}).get("content" if chat else "text") or ""
        ids = choice.get("token_ids") or ()
        reason = choice.get("finish_reason")
        if not isinstance(text, str):
            raise Malformed(f"text that is a {type(text).__name__} ({text!r:.40}), not a string")
        if not isinstance(ids, (list, tuple)) or not all(whole(t) for t in ids):
            raise Malformed("token_ids that are not a list of whole numbers")
        if reason is not None and not isinstance(reason, str):
            raise Malformed(f"a finish_reason that is a {type(reason).__name__}")
        lp = None
        if logprobs is not None:
            lp = read_logprobs(choice.get("logprobs"), chat, logprobs)
            if lp is None and text:
                raise NoLogprobs()
        thought, calls = (_reasoning(part), _tool_calls(part.get("tool_calls"))) if chat and part else ("", ())
        out.append(Delta(text, tuple(ids), now, reason, logprobs=lp, reasoning=thought, tool_calls=calls))
    return out


REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")   # vLLM/DeepSeek, OpenRouter/Ollama, others


def _reasoning(part: dict) -> str:
    for key in REASONING_FIELDS:
        v = part.get(key)
        if v is not None:
            if not isinstance(v, str):
                raise Malformed(f"a {key} that is a {type(v).__name__}, not a string")
            return v
    return ""


def _tool_calls(calls) -> tuple:
    """Streamed tool-call fragments: [{index, id?, type?, function: {name?, arguments?}}]."""
    if calls is None:
        return ()
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise Malformed("tool_calls that are not a list of objects")
    for c in calls:
        fn = c.get("function") or {}
        if not whole(c.get("index")) or not isinstance(fn, dict) or \
                not all(isinstance(fn.get(k), (str, type(None))) for k in ("name", "arguments")):
            raise Malformed("a tool call without an index, or whose function name/arguments are not text")
    return tuple(calls)


class ServerError(Exception):
    pass


class NoLogprobs(Exception):
    pass


def read_logprobs(field, chat: bool, n: int) -> tuple[TokenLogprob, ...] | None:
    """Chat: {"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]};
    completions: {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{text: logprob}]}.
    Alternatives are kept to the `n` most likely (some servers add the chosen token to them)."""
    if field is None:
        return None
    if not isinstance(field, dict):
        raise Malformed(f"logprobs that are a {type(field).__name__}, not an object")
    if chat:
        items = field.get("content")
        if items is None:
            return None
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise Malformed("logprobs.content that is not a list of objects")
        return tuple(TokenLogprob(_text(x.get("token")), _logprob(x.get("logprob")),
                                  _best([(_text(a.get("token")), _logprob(a.get("logprob")))
                                         for a in _objects(x.get("top_logprobs"))], n))
                     for x in items)
    tokens, values, tops = field.get("tokens"), field.get("token_logprobs"), field.get("top_logprobs")
    if tokens is None:
        return None
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise Malformed("logprobs.tokens and token_logprobs that are not lists of one length")
    if tops is None:
        tops = [{}] * len(tokens)
    if not isinstance(tops, list) or len(tops) != len(tokens):
        raise Malformed("logprobs.top_logprobs that is not a list as long as tokens")
    out = []
    for tok, value, top in zip(tokens, values, tops):
        if top is not None and not isinstance(top, dict):
            raise Malformed("logprobs.top_logprobs entries that are not objects")
        pairs = [(_text(t), _logprob(v)) for t, v in (top or {}).items()]
        out.append(TokenLogprob(_text(tok), _logprob(value), _best(pairs, n)))
    return tuple(out)


def _best(pairs: list, n: int) -> tuple:
    return tuple(sorted(pairs, key=lambda p: -p[1])[:n])


def _objects(x) -> list[dict]:
    if x is None:
        return []
    if not isinstance(x, list) or not all(isinstance(a, dict) for a in x):
        raise Malformed("top_logprobs that is not a list of objects")
    return x


def _text(x) -> str:
    if not isinstance(x, str):
        raise Malformed(f"a logprob token that is a {type(x).__name__}, not a string")
    return x


def _logprob(x) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) or x > 1e-6:
        raise Malformed(f"a logprob {x!r:.30} that is not a number <= 0")
    return float(x)
