"""Reading a stream's output as it arrives: thinking apart from the answer (a reasoning.Splitter
per format), tool calls taken out of the text when finished (tools.parse_calls), and a server's
streamed tool-call fragments joined into calls."""
from __future__ import annotations

from .errors import VllamaError, notice
from .reasoning import CALLS
from .tools import parse_calls, whole_answer_call


class OutputParser:
    def __init__(self, splitter=None):
        self.splitter = splitter   # reasoning.Splitter, None: all of the text is the answer
        self.tool_calls: list[dict] = []
        self.reasoning_tokens = 0
        self._fragments: dict[int, dict] = {}   # a server's tool-call deltas, by index
        self._answer_started = False

    def split(self, d, parts: list[str]):
        """The delta with its thinking moved out of the text and finished tool calls taken out;
        `parts` is the answer so far (a malformed call goes back into it as text)."""
        sp = self.splitter
        thinking_before = sp.state == "reasoning"
        pieces = sp.feed(d.text)
        if d.finish_reason:
            pieces += sp.flush()
        text = "".join(t for kind, t in pieces if kind == "text")
        reasoning = d.reasoning + "".join(t for kind, t in pieces if kind == "reasoning")
        if (thinking_before or sp.state == "reasoning") and not text:
            self.reasoning_tokens += len(d.token_ids)
        if sp.reasoned and not self._answer_started:
            text = text.lstrip()   # the blank line between a thought and its answer
        if text:
            self._answer_started = True
        while sp.calls:
            self._take_call(sp.calls.pop(0), parts)
        if d.finish_reason and sp.tools == "llama3" and not self.tool_calls:
            text = self._whole_answer_call(text, parts)
        return d._replace(text=text, reasoning=reasoning)

    def _take_call(self, body: str, parts: list[str]) -> None:
        try:
            self.tool_calls.extend(parse_calls(body, self.splitter.tools))
        except VllamaError as e:
            notice(f"the model wrote a malformed tool call ({e}): it is shown as text")
            opens, closes = CALLS[self.splitter.tools]
            parts.append(f"{opens}{body}{closes or ''}")

    def _whole_answer_call(self, last: str, parts: list[str]) -> str:
        """Llama 3.x writes a call as its whole answer: take it out of the text."""
        calls = whole_answer_call("".join(parts) + last)
        if calls:
            self.tool_calls.extend(calls)
            parts.clear()
            return ""
        return last

    def fragment(self, frag: dict) -> None:
        """Join a server's streamed tool-call fragments (id and name first, arguments in pieces)."""
        call = self._fragments.setdefault(frag.get("index", 0), {"id": "", "type": "function",
                                                                 "function": {"name": "", "arguments": ""}})
        call["id"] = frag.get("id") or call["id"]
        fn = frag.get("function") or {}
        call["function"]["name"] += fn.get("name") or ""
        call["function"]["arguments"] += fn.get("arguments") or ""

    def finish(self) -> None:
        """The stream ended: the joined fragments are its calls."""
        if self._fragments:
            self.tool_calls.extend(self._fragments[i] for i in sorted(self._fragments))
            self._fragments = {}
