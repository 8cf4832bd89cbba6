"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) on the shared engine, as
the `anthropic` client and Claude Code send and read it. A request is turned into a
chat-completions body and read by the same Plan (share_wire) as /v1/chat/completions, so each
field is honoured or refused in one line by the one option declaration; the answer is written
back as content blocks and, streamed, as message_start, content_block_start/delta/stop,
message_delta and message_stop events. `thinking` with a budget is the thinking switch plus
max_thinking (the thought is closed after that many tokens)."""
from __future__ import annotations

import json
import time
import uuid

from .errors import VllamaError

# fields that change nothing in the tokens (caching hints, routing, attribution, serving speed): accepted
ROUTINE = ("metadata", "service_tier", "cache_control", "diagnostics", "inference_geo", "user_profile_id",
           "workspace_id", "speed")
# Messages fields turned into chat-completions fields here; the rest pass to share_wire.Plan as they are
OWN = ("messages", "system", "stop_sequences", "tools", "tool_choice", "thinking", "max_tokens", "output_config",
       "container", "mcp_servers", "context_management", *ROUTINE)
STOP = {"stop": "end_turn", "length": "max_tokens"}
ERRORS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 503: "overloaded_error",
          500: "api_error"}


def to_chat(body: dict, caps=None) -> tuple[dict, dict]:
    """(a chat-completions body, sampling overrides) for a Messages request to a model that can do
    `caps` (capabilities.Capabilities)."""
    for field in ("container", "mcp_servers"):
        if body.get(field) is not None:
            raise VllamaError(f"{field} is not supported by the shared vllama engine: leave it out")
    if body.get("max_tokens") is None:
        raise VllamaError("max_tokens is required (the Messages API asks for it): give the most tokens to generate")
    chat = {k: v for k, v in body.items() if k not in OWN}
    chat["max_tokens"] = body["max_tokens"]
    chat["messages"] = messages(body.get("messages"), body.get("system"))
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        tools = body["tools"]
        chat["tools"] = [_tool(i, t) for i, t in enumerate(tools if isinstance(tools, list) else [tools])]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    overrides = {}
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            chat["chat_template_kwargs"] = {"enable_thinking": True}
            if budget is not None:
                overrides["max_thinking"] = budget
        elif kind == "disabled":   # the switch off; a model that never thinks needs none
            if caps is None or caps.thinking is not None or False in caps.think_values:
                chat["chat_template_kwargs"] = {"enable_thinking": False}
        elif kind not in ("adaptive", "between_tools"):   # those: the model's own default
            raise VllamaError("thinking must be {'type': 'enabled', 'budget_tokens': N}, {'type': 'adaptive'} or "
                              "{'type': 'disabled'}")
    _output_config(body.get("output_config"), chat, caps)
    _context_management(body.get("context_management"), chat["messages"])
    return chat, overrides


def _context_management(config, msgs: list[dict]) -> None:
    """context_management's clear_thinking edits: earlier turns' thinking dropped, but for the last
    `keep` turns (or all kept). Other edits are refused."""
    if config is None:
        return
    edits = config.get("edits") if isinstance(config, dict) else None
    if not isinstance(edits, list):
        raise VllamaError("context_management must be {'edits': [...]}")
    for edit in edits:
        kind = edit.get("type", "") if isinstance(edit, dict) else ""
        if not kind.startswith("clear_thinking"):
            raise VllamaError(f"context_management edit {kind!r} is not supported by the shared vllama engine: only "
                              "clear_thinking edits are")
        keep = edit.get("keep", "all")
        if keep == "all":
            continue
        n = keep.get("value") if isinstance(keep, dict) else None
        if not isinstance(n, int) or n < 0:
            raise VllamaError("clear_thinking's keep must be 'all' or {'type': 'thinking_turns', 'value': N}")
        turns = [m for m in msgs if m["role"] == "assistant" and m.get("reasoning_content")]
        for m in turns[:len(turns) - n]:
            del m["reasoning_content"]


def _output_config(config, chat: dict, caps) -> None:
    """output_config: effort as the reasoning level where the model's template has levels (on
    others it is advice the model follows as it does: Claude Code sends effort with every
    request), format as a JSON schema."""
    if config is None:
        return
    if not isinstance(config, dict) or set(config) - {"effort", "format"}:
        raise VllamaError("output_config must be {'effort': ..., 'format': {'type': 'json_schema', 'schema': {...}}}")
    effort = config.get("effort")
    if effort is not None:
        if effort not in ("low", "medium", "high"):
            raise VllamaError(f"output_config.effort={effort!r} cannot be honoured by the shared vllama engine: use "
                              "low, medium or high")
        if caps is None or effort in caps.think_values:
            chat["reasoning_effort"] = effort
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise VllamaError("output_config.format must be {'type': 'json_schema', 'schema': {...}}")
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def messages(msgs, system) -> list[dict]:
    """Messages (text, image, tool_use, tool_result and thinking blocks) and the system prompt as chat messages."""
    out: list[dict] = []
    instructions = [] if system is None else [system if isinstance(system, str) else _text_of(system, "system")]
    if not isinstance(msgs, list) or not msgs:
        raise VllamaError("messages must be a non-empty list of {'role': 'user', 'content': ...}")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
            raise VllamaError(f"message {i}: role must be 'user', 'assistant' or 'system'")
        content = m.get("content")
        if isinstance(content, str) and m["role"] != "system":
            out.append({"role": m["role"], "content": content})
            continue
        if m["role"] == "system":
            instructions.append(_text_of(content, f"message {i}"))
            continue
        if not isinstance(content, list):
            raise VllamaError(f"message {i}: content must be text or a list of content blocks")
        out += _user(i, content) if m["role"] == "user" else [_assistant(i, content)]
    # system messages inside the conversation (Claude Code sends them) join the system prompt:
    # most chat templates take a system message only at the start
    return ([{"role": "system", "content": "\n\n".join(instructions)}] if instructions else []) + out


def _user(i: int, blocks: list) -> list[dict]:
    """A user turn: its tool results first (as tool messages), then its text and images."""
    results, parts = [], []
    for b in blocks:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": b.get("text")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(i, b.get("source"))}})
        elif kind == "tool_result":
            content = b.get("content")
            text = content if isinstance(content, str) or content is None else _text_of(content, f"message {i}")
            results.append({"role": "tool", "tool_call_id": b.get("tool_use_id"),
                            "content": ("Error: " if b.get("is_error") else "") + (text or "")})
        else:
            raise VllamaError(f"message {i}: a user's {kind!r} block is not supported by the shared vllama engine: "
                              "use text, image or tool_result blocks")
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant(i: int, blocks: list) -> dict:
    msg: dict = {"role": "assistant", "content": None}
    text, calls, thought = [], [], []
    for b in blocks:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            text.append(b.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": b.get("id"), "type": "function",
                          "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}})
        elif kind == "thinking":
            thought.append(b.get("thinking") or "")
        elif kind == "redacted_thinking":
            continue   # a thought this engine could not read anyway
        else:
            raise VllamaError(f"message {i}: an assistant's {kind!r} block is not supported by the shared vllama "
                              "engine: use text, tool_use or thinking blocks")
    if text or not calls:
        msg["content"] = "".join(text)
    if calls:
        msg["tool_calls"] = calls
    if thought:
        msg["reasoning_content"] = "".join(thought)
    return msg


def _image_url(i: int, source) -> str:
    if isinstance(source, dict) and source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise VllamaError(f"message {i}: an image's source must be {{'type': 'base64', 'media_type': ..., 'data': ...}} "
                      "or {'type': 'url', 'url': ...}")


def _text_of(blocks, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list) or any(not isinstance(b, dict) or b.get("type") != "text" for b in blocks):
        raise VllamaError(f"{where}: give text, or a list of text blocks")
    return "".join(b.get("text") or "" for b in blocks)


def _tool(i: int, t) -> dict:
    if not isinstance(t, dict) or t.get("type") not in (None, "custom") or not t.get("name"):
        kind = t.get("type") if isinstance(t, dict) else type(t).__name__
        raise VllamaError(f"tools[{i}] of type {kind!r} is not supported by the shared vllama engine: give tools "
                          "with a name and an input_schema")
    fn = {"name": t["name"], "parameters": t.get("input_schema") or {"type": "object", "properties": {}}}
    if t.get("description"):
        fn["description"] = t["description"]
    return {"type": "function", "function": fn}


def _tool_choice(tc):
    kind = tc.get("type") if isinstance(tc, dict) else None
    if tc.get("disable_parallel_tool_use") if isinstance(tc, dict) else False:
        raise VllamaError("disable_parallel_tool_use cannot be honoured by the shared vllama engine: leave it out")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and tc.get("name"):
        return {"type": "function", "function": {"name": tc["name"]}}
    raise VllamaError("tool_choice must be {'type': 'auto'}, {'type': 'any'}, {'type': 'tool', 'name': ...} or "
                      "{'type': 'none'}")


def count_body(body: dict) -> dict:
    """A count_tokens request as a Messages request (its max_tokens does not matter)."""
    extra = sorted(set(body) - {"model", "messages", "system", "tools", "tool_choice", "thinking"})
    if extra:
        raise VllamaError(f"unknown request field {extra[0]!r} for count_tokens: leave it out")
    return {**body, "max_tokens": 1}


def error(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": ERRORS.get(status, "api_error"), "message": message}}


# -- the answer ------------------------------------------------------------------------------------
class Reply:
    """One message: content blocks made whole or streamed as events."""

    def __init__(self, body: dict, model: str):
        self.body, self.model = body, model
        self.id = f"msg_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.index = 0           # the next block's index
        self.open: str | None = None   # the block being streamed: thinking or text

    def message(self, content: list, result=None) -> dict:
        out = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
               "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": result.prompt_tokens if result else 0,
                         "output_tokens": result.output_tokens if result else 0}}
        if result is not None:
            out["stop_reason"] = "tool_use" if result.tool_calls else STOP.get(result.finish_reason, "end_turn")
        return out

    def whole(self, result) -> dict:
        content = []
        if result.reasoning:
            content.append({"type": "thinking", "thinking": result.reasoning, "signature": ""})
        if result.text or not (result.reasoning or result.tool_calls):   # an answer, or an empty one
            content.append({"type": "text", "text": result.text})
        content += [_use(c) for c in result.tool_calls]
        return self.message(content, result)

    # -- streamed --------------------------------------------------------------------------------
    @staticmethod
    def event(kind: str, **fields) -> tuple[str, dict]:
        return kind, {"type": kind, **fields}

    def start(self) -> list:
        return [self.event("message_start", message=self.message([]))]

    def feed(self, deltas) -> list:
        out: list = []
        for d in deltas:
            if d.reasoning:
                out += self._text("thinking", d.reasoning)
            if d.text:
                out += self._text("text", d.text)
        return out

    def _text(self, kind: str, text: str) -> list:
        out = []
        if self.open is not None and self.open != kind:
            out += self._close()
        if self.open is None:
            self.open = kind
            block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else \
                {"type": "text", "text": ""}
            out.append(self.event("content_block_start", index=self.index, content_block=block))
        delta = {"type": "thinking_delta", "thinking": text} if kind == "thinking" else {"type": "text_delta", "text": text}
        out.append(self.event("content_block_delta", index=self.index, delta=delta))
        return out

    def _close(self) -> list:
        out = []
        if self.open == "thinking":   # the client keeps a signature with each thinking block
            out.append(self.event("content_block_delta", index=self.index,
                                  delta={"type": "signature_delta", "signature": ""}))
        out.append(self.event("content_block_stop", index=self.index))
        self.open, self.index = None, self.index + 1
        return out

    def end(self, result) -> list:
        out = self._close() if self.open is not None else []
        if self.index == 0 and not result.tool_calls:   # as whole(): an empty answer rather than nothing
            out += self._text("text", "") + self._close()
        for c in result.tool_calls:
            use = _use(c)
            out.append(self.event("content_block_start", index=self.index, content_block={**use, "input": {}}))
            out.append(self.event("content_block_delta", index=self.index,
                                  delta={"type": "input_json_delta", "partial_json": c["function"]["arguments"]}))
            out.append(self.event("content_block_stop", index=self.index))
            self.index += 1
        final = self.message([], result)
        out.append(self.event("message_delta", delta={"stop_reason": final["stop_reason"], "stop_sequence": None},
                              usage={"output_tokens": result.output_tokens}))
        return out + [self.event("message_stop")]


def _use(c: dict) -> dict:
    return {"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
            "input": json.loads(c["function"]["arguments"] or "{}")}
