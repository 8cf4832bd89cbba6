"""Splitting a model's streamed text into thinking, answer and tool-call markup as it arrives:
one table of markers per format, shared by every engine (servers' own reasoning fields bypass it).

Thinking:   think    <think> … </think> answer (Qwen3, DeepSeek-R1, Granite, …)
            harmony  gpt-oss: <|channel|>analysis<|message|> … <|end|><|start|>assistant<|channel|>final<|message|> …
Tool calls: hermes   <tool_call>{json}</tool_call> (Qwen, Hermes; Qwen3.5's <function=…> XML inside)
            mistral  [TOOL_CALLS][{json}, …] or [TOOL_CALLS]name[ARGS]{json} to the end of the output
            harmony  <|start|>assistant to=functions.name<|channel|>commentary json<|message|>{json}<|call|>
            deepseek <｜tool▁call▁begin｜>name<｜tool▁sep｜>{json}<｜tool▁call▁end｜> (R1 distills: function<｜tool▁sep｜>name ```json …```)
            llama3   the whole answer is {"name": …, "parameters": {…}} (no markers: read at the end)
"""
from __future__ import annotations

TEXT, REASONING, TOOL = "text", "reasoning", "tool"

# state -> {marker: next state}; markers never show in the output
THINKING = {
    "think": {TEXT: {"<think>": REASONING}, REASONING: {"</think>": TEXT}},
    "harmony": {TEXT: {"<|channel|>analysis<|message|>": REASONING, "<|channel|>final<|message|>": TEXT,
                       "<|channel|>commentary": TEXT, "<|start|>assistant": TEXT, "<|end|>": TEXT,
                       "<|return|>": TEXT},
                REASONING: {"<|end|>": TEXT, "<|channel|>final<|message|>": TEXT, "<|return|>": TEXT}},
    None: {TEXT: {}},
}
# tool-call format -> (marker that opens a call, marker that closes it; None: the end of the output)
CALLS = {"hermes": ("<tool_call>", "</tool_call>"), "mistral": ("[TOOL_CALLS]", None),
         "harmony": (" to=functions.", None), "deepseek": ("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>"),
         "llama3": None, None: None}
# markers around a format's calls that carry nothing and are dropped
AROUND = {"deepseek": ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")}

# what closes a thought that has gone on too long (max_thinking), per format
CLOSE = {"think": "\n</think>\n\n", "harmony": "<|end|><|start|>assistant<|channel|>final<|message|>"}
# what closes a thought before a forced tool call (gpt-oss's call starts its own message)
CLOSE_FOR_CALL = {**CLOSE, "harmony": "<|end|>"}


class Splitter:
    """feed(text) -> [(kind, text)] with kind 'text' or 'reasoning', and `calls`: the bodies of
    finished tool calls. Text that may be the start of a marker is held back until it is not."""

    def __init__(self, fmt: str | None, thinking: bool = False, tools: str | None = None):
        self.fmt, self.tools = fmt, tools
        table = {k: dict(v) for k, v in THINKING[fmt].items()}
        marks = CALLS[tools]
        if marks:
            table[TEXT].update({m: TEXT for m in AROUND.get(tools, ())})
            table[TEXT][marks[0]] = TOOL
            table[TOOL] = {marks[1]: TEXT} if marks[1] else {marks[0]: TOOL}   # a call after a call
        self.to_end = bool(marks) and marks[1] is None
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
            if self.state == TOOL:
                self.calls.append(self.tool_body)
                self.tool_body = ""
            self.state = marks[mark]
            self.reasoned = self.reasoned or self.state == REASONING
            buf = buf[at + len(mark):]
        self.pending = buf
        return out

    def flush(self) -> list[tuple[str, str]]:
        """The end of the stream: held text comes out; a call that runs to the end is finished, an
        unclosed <tool_call> block comes back as text."""
        out: list[tuple[str, str]] = []
        buf, self.pending = self.pending, ""
        self._emit(out, buf)
        if self.state == TOOL:
            if self.to_end:
                self.calls.append(self.tool_body)
            else:
                out.append((TEXT, CALLS[self.tools][0] + self.tool_body))
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
