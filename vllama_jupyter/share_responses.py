"""OpenAI's Responses API (/v1/responses) on the shared engine, as the `openai` client, the OpenAI
Agents SDK and Codex send and read it. A request is turned into a chat-completions body and read
by the same Plan (share_wire) as /v1/chat/completions, so each field is honoured or refused in
one line by the one option declaration; the answer is written back as Responses output items
and, streamed, as the event sequence the client's `responses.stream` helper accumulates.

Stateless: nothing is stored. `store` is accepted (nothing is kept, as with store=false) and
`previous_response_id` is refused in one line: agents send the whole conversation each turn
(the Agents SDK by default, Codex with store=false), and a store in a kernel would vanish with it."""
from __future__ import annotations

import time
import uuid

from .errors import VllamaError

# Responses fields turned into chat-completions fields here; the rest pass to share_wire.Plan as they are
OWN = ("input", "instructions", "max_output_tokens", "tools", "tool_choice", "text", "reasoning", "store",
       "previous_response_id", "include", "truncation", "top_logprobs", "stream_options", "prompt_cache_key",
       "safety_identifier", "background", "client_metadata")
INCLUDE = ("reasoning.encrypted_content", "message.output_text.logprobs")   # what `include` may ask for


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def to_chat(body: dict, caps=None) -> tuple[dict, dict]:
    """(a chat-completions body, sampling overrides) for a Responses request."""
    if body.get("previous_response_id") is not None:
        raise VllamaError("previous_response_id: this share keeps no responses (it is stateless), so send the "
                          "whole conversation in input (the Agents SDK and Codex with store=false do)")
    if body.get("background"):
        raise VllamaError("background=true is not supported by the shared vllama engine: stream the response "
                          "instead (stream=true)")
    chat = {k: v for k, v in body.items() if k not in OWN}
    chat["messages"] = messages(body.get("input"), body.get("instructions"))
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools:
        chat["tools"] = [_tool(i, t) for i, t in _functions(tools)]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = _text(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort is not None:
        _effort(effort, chat, caps)
    include = body.get("include") or []
    bad = [x for x in include if x not in INCLUDE] if isinstance(include, list) else [include]
    if bad:
        raise VllamaError(f"include {bad[0]!r} is not supported by the shared vllama engine: use "
                          f"{' or '.join(INCLUDE)}, or leave it out")
    if "message.output_text.logprobs" in include or body.get("top_logprobs"):
        chat["logprobs"], chat["top_logprobs"] = True, body.get("top_logprobs") or 0
    if body.get("truncation") not in (None, "disabled", "auto"):
        raise VllamaError(f"truncation must be 'disabled' or 'auto' (got {body['truncation']!r})")
    return chat, {}


def _effort(effort, chat: dict, caps) -> None:
    """reasoning.effort as the model's thinking switch: its level where the template has levels;
    on a template with only a switch, none/minimal turn it off and the others on."""
    if caps is None or effort in caps.think_values or not isinstance(effort, str):
        chat["reasoning_effort"] = effort   # levels (or a value the option's check refuses)
    elif effort in ("none", "minimal"):
        chat["chat_template_kwargs"] = {"enable_thinking": False}
    elif effort in ("low", "medium", "high", "xhigh"):
        chat["chat_template_kwargs"] = {"enable_thinking": True}
    else:
        chat["reasoning_effort"] = effort


def messages(inp, instructions) -> list[dict]:
    """Responses input (text, or a list of items) as chat messages."""
    out: list[dict] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise VllamaError("instructions must be text")
        out.append({"role": "system", "content": instructions})
    if isinstance(inp, str):
        return out + [{"role": "user", "content": inp}]
    if not isinstance(inp, list) or not inp:
        raise VllamaError("input must be text or a non-empty list of items (messages, function_call, "
                          "function_call_output)")
    thought = None
    for i, item in enumerate(inp):
        if not isinstance(item, dict):
            raise VllamaError(f"input item {i} is a {type(item).__name__}, not an object")
        kind = item.get("type", "message")
        if kind == "message":
            msg = {"role": item.get("role"), "content": _content(i, item.get("content"))}
            if msg["role"] == "assistant" and thought:
                msg["reasoning_content"], thought = thought, None
            out.append(msg)
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call],
                            **({"reasoning_content": thought} if thought else {})})
                thought = None
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
        elif kind == "reasoning":
            parts = (item.get("content") or []) + (item.get("summary") or [])
            thought = "".join(p.get("text", "") for p in parts if isinstance(p, dict)) or None
        else:
            raise VllamaError(f"input item {i} of type {kind!r} is not supported by the shared vllama engine: use "
                              "messages, function_call and function_call_output items")
    return out


def _content(i: int, content):
    """A message's content: text, or parts (input_text, output_text, input_image) as chat parts."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        raise VllamaError(f"input item {i}: content must be text or a list of parts")
    parts = []
    for p in content:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": p.get("text")})
        elif kind == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str):
                raise VllamaError(f"input item {i}: an input_image needs image_url (a data: URL or an http(s) URL; "
                                  "file_id is not supported)")
            parts.append({"type": "image_url", "image_url": {"url": url, **({"detail": p["detail"]}
                                                                          if p.get("detail") else {})}})
        else:
            raise VllamaError(f"input item {i}: content part {kind!r} is not supported by the shared vllama "
                              "engine: use input_text or input_image")
    return parts


def _functions(tools) -> list[tuple[int, dict]]:
    """(index, tool) of every function tool, a namespace's functions taken out of it (Codex groups its
    tools so); a name in two namespaces is one line."""
    out, seen = [], set()
    for i, t in enumerate(tools if isinstance(tools, list) else [tools]):
        inner = t.get("tools") if isinstance(t, dict) and t.get("type") == "namespace" else None
        for each in (inner if isinstance(inner, list) else [t]):
            name = each.get("name") if isinstance(each, dict) else None
            if name in seen:
                raise VllamaError(f"tools[{i}]: the name {name!r} is given twice: give each function one name")
            seen.add(name)
            out.append((i, each))
    return out


def namespaces(tools) -> dict[str, str]:
    """function name -> the namespace it was given in."""
    return {f["name"]: t["name"] for t in tools or () if isinstance(t, dict) and t.get("type") == "namespace"
            for f in t.get("tools") or () if isinstance(f, dict) and f.get("name")}


def _tool(i: int, t) -> dict:
    if not isinstance(t, dict) or t.get("type") != "function" or not t.get("name"):
        kind = t.get("type") if isinstance(t, dict) else type(t).__name__
        raise VllamaError(f"tools[{i}] of type {kind!r} is not supported by the shared vllama engine: give function "
                          "tools ({'type': 'function', 'name': ..., 'parameters': {...}})")
    fn = {"name": t["name"], "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
    if t.get("description"):
        fn["description"] = t["description"]
    return {"type": "function", "function": fn}


def _tool_choice(tc):
    if tc in ("auto", "none", "required"):
        return tc
    if isinstance(tc, dict) and tc.get("type") == "function" and tc.get("name"):
        return {"type": "function", "function": {"name": tc["name"]}}
    raise VllamaError("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}")


def _text(text):
    """text.format as response_format (None: plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
        raise VllamaError("text must be {'format': {...}}")
    if text.get("verbosity") not in (None, "medium"):
        raise VllamaError(f"text.verbosity={text['verbosity']!r} cannot be honoured by the shared vllama engine: "
                          "leave it out")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name", "output"), "schema": fmt.get("schema")}}
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    raise VllamaError("text.format must be {'type': 'text'}, {'type': 'json_object'} or "
                      "{'type': 'json_schema', 'name': ..., 'schema': {...}}")


# -- the answer ------------------------------------------------------------------------------------
class Reply:
    """One response: its id and fields, output items made whole or streamed as events."""

    def __init__(self, body: dict, model: str):
        self.body, self.model = body, model
        self.id, self.created = new_id("resp"), int(time.time())
        self.seq = 0
        self.items: list[dict] = []      # output items done so far
        self.spaces = namespaces(body.get("tools"))
        self.open: dict | None = None    # the item being streamed (reasoning or message)

    def response(self, status: str, result=None) -> dict:
        b = self.body
        out = {"id": self.id, "object": "response", "created_at": self.created, "status": status, "model": self.model,
               "output": list(self.items), "error": None, "incomplete_details": None,
               "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
               "parallel_tool_calls": b.get("parallel_tool_calls", True), "temperature": b.get("temperature"),
               "top_p": b.get("top_p"), "tool_choice": b.get("tool_choice", "auto"), "tools": b.get("tools") or [],
               "text": b.get("text") or {"format": {"type": "text"}}, "metadata": b.get("metadata") or {},
               "store": False, "usage": None}
        if result is not None:
            out["usage"] = {"input_tokens": result.prompt_tokens, "output_tokens": result.output_tokens,
                            "total_tokens": result.prompt_tokens + result.output_tokens,
                            "input_tokens_details": {"cached_tokens": 0},
                            "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens}}
            if result.finish_reason == "length":
                out["status"], out["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
        return out

    def whole(self, result) -> dict:
        if result.reasoning:
            self.items.append(_reasoning(new_id("rs"), result.reasoning))
        if result.text or not (result.reasoning or result.tool_calls):   # an answer, or an empty one
            self.items.append(_message(new_id("msg"), result.text, result.logprobs))
        self.items += [_call(c, self.spaces) for c in result.tool_calls]
        return self.response("completed", result)

    # -- streamed --------------------------------------------------------------------------------
    def event(self, kind: str, **fields) -> tuple[str, dict]:
        self.seq += 1
        return kind, {"type": kind, "sequence_number": self.seq - 1, **fields}

    def start(self) -> list:
        return [self.event("response.created", response=self.response("in_progress")),
                self.event("response.in_progress", response=self.response("in_progress"))]

    def feed(self, deltas) -> list:
        out: list = []
        for d in deltas:
            if d.reasoning:
                out += self._text("reasoning", d.reasoning)
            if d.text:
                out += self._text("message", d.text)
        return out

    def _text(self, kind: str, text: str) -> list:
        out = []
        if self.open is not None and self.open["type"] != kind:
            out += self._close()
        if self.open is None:
            item_id = new_id("rs" if kind == "reasoning" else "msg")
            self.open = {"type": kind, "id": item_id, "text": ""}
            shell = _reasoning(item_id, "") if kind == "reasoning" else _message(item_id, "", None)
            shell["status"] = "in_progress"
            if kind == "message":
                shell["content"] = []
            out.append(self.event("response.output_item.added", output_index=len(self.items), item=shell))
            part = {"type": "reasoning_text", "text": ""} if kind == "reasoning" else \
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self.event("response.content_part.added", item_id=item_id, output_index=len(self.items),
                                  content_index=0, part=part))
        self.open["text"] += text
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": []}
        out.append(self.event(name, item_id=self.open["id"], output_index=len(self.items), content_index=0,
                              delta=text, **extra))
        return out

    def _close(self) -> list:
        o, self.open = self.open, None
        index = len(self.items)
        if o["type"] == "reasoning":
            item, part = _reasoning(o["id"], o["text"]), {"type": "reasoning_text", "text": o["text"]}
            done = self.event("response.reasoning_text.done", item_id=o["id"], output_index=index, content_index=0,
                              text=o["text"])
        else:
            item = _message(o["id"], o["text"], None)
            part = item["content"][0]
            done = self.event("response.output_text.done", item_id=o["id"], output_index=index, content_index=0,
                              text=o["text"], logprobs=[])
        self.items.append(item)
        return [done, self.event("response.content_part.done", item_id=o["id"], output_index=index, content_index=0,
                                 part=part),
                self.event("response.output_item.done", output_index=index, item=item)]

    def end(self, result) -> list:
        out = self._close() if self.open is not None else []
        if not self.items and not result.tool_calls:   # as whole(): an empty answer rather than nothing
            out += self._text("message", "") + self._close()
        for c in result.tool_calls:
            item = _call(c, self.spaces)
            index = len(self.items)
            out.append(self.event("response.output_item.added", output_index=index,
                                  item={**item, "arguments": "", "status": "in_progress"}))
            out.append(self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                  delta=item["arguments"]))
            out.append(self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                  arguments=item["arguments"], name=item["name"]))
            self.items.append(item)
            out.append(self.event("response.output_item.done", output_index=index, item=item))
        # response.completed even when the response is incomplete (its status says so): the client's
        # stream helper waits for it, as vLLM's server sends it
        return out + [self.event("response.completed", response=self.response("completed", result))]


def _reasoning(item_id: str, text: str) -> dict:
    return {"type": "reasoning", "id": item_id, "summary": [], "status": "completed",
            "content": [{"type": "reasoning_text", "text": text}]}


def _message(item_id: str, text: str, logprobs) -> dict:
    lp = [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
           "top_logprobs": [{"token": a, "logprob": x, "bytes": list(a.encode())} for a, x in t.top]}
          for t in logprobs or ()]
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": lp}]}


def _call(c: dict, spaces: dict) -> dict:
    name = c["function"]["name"]
    return {"type": "function_call", "id": new_id("fc"), "call_id": c["id"], "name": name,
            "arguments": c["function"]["arguments"], "status": "completed",
            **({"namespace": spaces[name]} if name in spaces else {})}
