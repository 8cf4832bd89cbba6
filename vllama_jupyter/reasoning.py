"""Splitting a model's streamed text into thinking, answer and tool-call markup as it arrives:
one table of markers per format, shared by every engine (servers' own reasoning fields bypass it).

  think     <think> … </think> answer, <tool_call>{json}</tool_call> (Qwen3, DeepSeek-R1, Hermes)
  harmony   gpt-oss: <|channel|>analysis<|message|> … <|end|><|start|>assistant<|channel|>final<|message|> …
"""
from __future__ import annotations

TEXT, REASONING, TOOL = "text", "reasoning", "tool"

# state -> {marker: next state}; markers never show in the output
TABLES = {
    "think": {TEXT: {"<think>": REASONING, "<tool_call>": TOOL}, REASONING: {"</think>": TEXT},
              TOOL: {"</tool_call>": TEXT}},
    "harmony": {TEXT: {"<|channel|>analysis<|message|>": REASONING, "<|channel|>final<|message|>": TEXT,
                       "<|start|>assistant": TEXT, "<|end|>": TEXT, "<|return|>": TEXT},
                REASONING: {"<|end|>": TEXT, "<|channel|>final<|message|>": TEXT, "<|return|>": TEXT}},
    None: {TEXT: {"<tool_call>": TOOL}, TOOL: {"</tool_call>": TEXT}},
}

# what closes a thought that has gone on too long (max_thinking), per format
CLOSE = {"think": "\n</think>\n\n", "harmony": "<|end|><|start|>assistant<|channel|>final<|message|>"}


class Splitter:
    """feed(text) -> [(kind, text)] with kind 'text' or 'reasoning', and `calls`: the bodies of
    finished tool-call blocks. Text that may be the start of a marker is held back until it is not."""

    def __init__(self, fmt: str | None, thinking: bool = False, tools: bool = True):
        self.fmt = fmt
        table = TABLES[fmt]
        if not tools:
            table = {k: {m: s for m, s in v.items() if s != TOOL} for k, v in table.items() if k != TOOL}
        self.table = table
        self.state = REASONING if thinking and REASONING in table else TEXT
        self.pending = ""
        self.tool_body = ""
        self.calls: list[str] = []
        self.reasoned = self.state == REASONING   # whether any thinking has started

    def feed(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        buf = self.pending + text
        while buf:
            marks = self.table[self.state]
            hit = min(((buf.find(m), m) for m in marks if m in buf), default=None)
            if hit is None:
                keep = _held(buf, marks)
                self._emit(out, buf[:len(buf) - keep])
                buf = buf[len(buf) - keep:]
                break
            at, mark = hit
            self._emit(out, buf[:at])
            new = marks[mark]
            if self.state == TOOL and new != TOOL:
                self.calls.append(self.tool_body)
                self.tool_body = ""
            self.state = new
            self.reasoned = self.reasoned or new == REASONING
            buf = buf[at + len(mark):]
        self.pending = buf
        return out

    def flush(self) -> list[tuple[str, str]]:
        """The end of the stream: held text comes out; an unclosed tool call comes back as text."""
        out: list[tuple[str, str]] = []
        buf, self.pending = self.pending, ""
        self._emit(out, buf)
        if self.state == TOOL:
            out.append((TEXT, "<tool_call>" + self.tool_body))
            self.tool_body, self.state = "", TEXT
        return out

    def _emit(self, out: list, text: str) -> None:
        if not text:
            return
        if self.state == TOOL:
            self.tool_body += text
        else:
            out.append((self.state, text))


def _held(buf: str, marks) -> int:
    """How many trailing characters of `buf` could begin one of `marks`."""
    best = 0
    for m in marks:
        for n in range(min(len(m) - 1, len(buf)), best, -1):
            if m.startswith(buf[-n:]):
                best = n
                break
    return best


def opens_thinking(prompt: str, fmt: str | None) -> bool:
    """Whether the rendered prompt itself opens the thought (templates that end with <think>)."""
    tail = prompt.rstrip()
    if fmt == "think":
        return tail.endswith("<think>")
    if fmt == "harmony":
        return tail.endswith("<|channel|>analysis<|message|>")
    return False
