"""Turning chat messages into a prompt: the model's own Jinja template when it has one, a plain one
otherwise; the template's switches for thinking; and fitting a conversation into the context.

The renderer is built as transformers' `apply_chat_template` builds its own (sandboxed Jinja, loop
controls, the `generation` tag, HF's `tojson`, `raise_exception`, `strftime_now`), so a model
renders the same prompt here as under transformers, without needing transformers installed
(llama.cpp installs have none). The tests compare the two on every vendored template."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from .capabilities import think_switch
from .errors import VllamaError, first_line
from .messages import check_messages, text_of

# Where a reply ends under the plain template: the end of the speaker's turn.
PLAIN_STOPS = ("\n\n", "\nUSER:")


def plain_prompt(messages: list[dict]) -> str:
    """A template-free rendering, speaker names in capitals as in a play script."""
    if any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        raise VllamaError("this model has no chat template, so it cannot take tool calls: load a model whose "
                          "template offers tools")
    turns = [f"{m['role'].upper()}:\n{text_of(m.get('content')).strip()}\n\n" for m in messages]
    return "".join(turns) + "ASSISTANT:\n"


@lru_cache(maxsize=16)
def _compiled(template: str):
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """transformers' {% generation %} … {% endgeneration %}: marks assistant text; renders its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        from jinja2.exceptions import TemplateError
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_template(template: str, messages: list[dict], bos: str = "", eos: str = "", tools: list | None = None,
                    kwargs: dict | None = None, add_generation_prompt: bool = True) -> str:
    """Render a Jinja chat template (as stored in GGUF / tokenizer_config.json) in a sandbox.
    `tools`: OpenAI tool schemas; `kwargs`: the template's own switches (enable_thinking, ...)."""
    from jinja2 import TemplateError

    try:
        compiled = _compiled(template)
    except TemplateError as e:
        raise VllamaError(f"the model's chat template does not compile: {first_line(e, 200)}") from None
    try:
        return compiled.render(messages=for_template(messages), tools=tools or None, bos_token=bos, eos_token=eos,
                               add_generation_prompt=add_generation_prompt, **(kwargs or {}))
    except TemplateError as e:
        raise VllamaError(f"the model's chat template refused these messages: {first_line(e, 200)}") from None
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as e:
        raise VllamaError(f"the model's chat template failed on these messages ({type(e).__name__}: {first_line(e, 200)})") from None


def for_template(messages: list[dict]) -> list[dict]:
    """Messages as Hugging Face templates read them: a tool call's arguments as a dict (OpenAI
    sends JSON text; vLLM's server turns it into a dict the same way), content of text parts only
    as one text (templates call string methods on it)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list) and content and all(p.get("type") == "text" for p in content):
            m = {**m, "content": "\n".join(p["text"] for p in content)}   # text parts as the text (as vLLM's server)
        if m.get("tool_calls"):
            calls = [{**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
                     for c in m["tool_calls"]]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out



# -- thinking and tools, as the template speaks of them ---------------------------------------
def think_kwargs(template: str | None, think) -> dict:
    """The template variables that set thinking to `think` (True/False/'low'/'medium'/'high');
    gate.check has refused a value the template does not take."""
    if think is None:
        return {}
    if isinstance(think, str):
        return {"reasoning_effort": think}
    name = think_switch(template)
    return {name: think} if name else {}   # levels without a switch: True is the template's default


def reasoning_format(template: str | None) -> str | None:
    """How the model marks its thinking: 'think' (<think>…</think>), 'harmony' (gpt-oss channels) or None."""
    t = template or ""
    if "<|channel|>" in t:
        return "harmony"
    if "<think>" in t or "</think>" in t:
        return "think"
    return None


def tool_format(template: str | None) -> str | None:
    """How the model writes a tool call (see reasoning.CALLS): hermes, mistral, harmony, llama3, or None."""
    t = template or ""
    if "<tool_call>" in t:
        return "hermes"
    if "[TOOL_CALLS]" in t:
        return "mistral"
    if "<｜tool▁call▁begin｜>" in t:
        return "deepseek"
    if "to=functions." in t or "\"functions.\" +" in t:
        return "harmony"
    if '"parameters": dictionary of argument name' in t:
        return "llama3"
    return None


def fit_context(eng, msgs: list[dict], s) -> list[dict]:
    """`msgs` with the oldest turns dropped (never the system prompt, never the new message) until
    the prompt leaves room for the reply (max_tokens, at most half the context). Says how many."""
    try:
        ctx = eng.context_length()
        size = eng.prompt_tokens
        if size(msgs) + min(s.max_tokens, ctx // 2) <= ctx:
            return msgs
    except VllamaError:
        return msgs   # a server that cannot count: it answers for itself
    system = msgs[:1] if msgs[0]["role"] in ("system", "developer") else []
    turns, last = msgs[len(system):-1], msgs[-1]
    dropped = 0
    while turns:
        cut = 2 if len(turns) > 1 and turns[0]["role"] == "user" and turns[1]["role"] == "assistant" else 1
        turns = turns[cut:]
        dropped += 1
        if size(system + turns + [last]) + min(s.max_tokens, ctx // 2) <= ctx:
            break
    if dropped:
        from .errors import notice
        notice(f"dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} of the conversation to fit "
               f"the {ctx:,}-token context")
    return system + turns + [last]


__all__ = ["check_messages", "plain_prompt", "render_template", "think_kwargs", "reasoning_format", "tool_format",
           "fit_context", "PLAIN_STOPS"]
