"""The one message model: OpenAI's chat shape, checked here and nowhere else.

Roles system, developer, user, assistant, tool. Content is text or a list of parts
({"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}}); an assistant
message may carry `tool_calls` (its content may then be empty), a tool message answers one
call by its `tool_call_id`. Engines, templates, the share server and the openai engine all take
the checked list as it is."""
from __future__ import annotations

import json
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import VllamaError

ROLES = ("system", "developer", "user", "assistant", "tool")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Union[TextPart, ImagePart]


class Function(_Strict):
    name: str = Field(min_length=1)
    arguments: str   # JSON text, as OpenAI sends it

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v: str) -> str:
        try:
            ok = isinstance(json.loads(v), dict)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("arguments must be JSON text of an object, e.g. '{\"x\": 1}'")
        return v


class ToolCall(_Strict):
    id: str = Field(min_length=1)
    type: Literal["function"]
    function: Function


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None   # an earlier turn's thinking, where a client keeps it


def check_messages(messages: Any) -> list[dict]:
    """The messages as plain dicts in OpenAI's shape, or one VllamaError line naming the first problem."""
    if not isinstance(messages, list) or not messages:
        raise VllamaError("no messages to send: give a list with at least one {'role': 'user', 'content': ...}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise VllamaError(f"message {i} is a {type(m).__name__}, not a dict like {{'role': 'user', 'content': 'Hi'}}")
        try:
            msg = Message.model_validate(m)
        except ValidationError as e:
            raise VllamaError(f"message {i} ({_role(m)}): {_first(e)}") from None
        _check_roles(i, msg)
        plain = msg.model_dump(exclude_none=True)
        if msg.tool_calls:   # clients send content None beside calls; templates read message.content
            plain.setdefault("content", "")
        out.append(plain)
    return out


def _check_roles(i: int, m: Message) -> None:
    where = f"message {i} ({m.role})"
    if m.role == "tool":
        if not m.tool_call_id:
            raise VllamaError(f"{where} needs the tool_call_id of the call it answers")
        if m.content is None:
            raise VllamaError(f"{where} needs content: the tool's result as text")
    elif m.tool_call_id is not None:
        raise VllamaError(f"{where}: only tool messages carry a tool_call_id")
    if m.tool_calls is not None and m.role != "assistant":
        raise VllamaError(f"{where}: only assistant messages carry tool_calls")
    if m.role != "assistant" and m.content is None:
        raise VllamaError(f"{where} has no content: give text, or a list of text/image_url parts")
    if m.role == "assistant" and m.content is None and not m.tool_calls:
        raise VllamaError(f"{where} has neither content nor tool_calls")
    if isinstance(m.content, list) and m.role != "user" and any(p.type == "image_url" for p in m.content):
        raise VllamaError(f"{where}: images go in user messages")


def _role(m: dict) -> str:
    r = m.get("role")
    return r if isinstance(r, str) else "no role"


def _first(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-", "union[")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error" and loc == "role":
        return f"role must be one of {', '.join(ROLES)} (got {err.get('input')!r})"
    if loc.split(".")[0] == "content" and loc.count(".") <= 1:
        return "content must be text or a list of parts ({'type': 'text', 'text': ...} or {'type': 'image_url', ...})"
    if err["type"] == "extra_forbidden":
        return f"unknown field {loc!r}: messages take role, content, name, tool_calls, tool_call_id"
    return f"{loc or 'message'}: {msg}"


def text_of(content) -> str:
    """The text of a message's content (parts joined; images left out)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p.get("type") == "text")


def image_urls(messages: list[dict]) -> list[str]:
    """The URLs of the image parts of checked messages, in order."""
    return [p["image_url"]["url"] for m in messages if isinstance(m.get("content"), list)
            for p in m["content"] if p.get("type") == "image_url"]


def has_images(messages: list[dict]) -> bool:
    return bool(image_urls(messages))
