"""What the loaded engine and model can do, as one typed value. Everything outside `engines/`
reads this (never an engine's name or its attributes), and `gate.check` holds every request
against it before an engine sees the request."""
from __future__ import annotations

from dataclasses import dataclass

from .options import THINK_LEVELS


@dataclass(frozen=True)
class Capabilities:
    engine: str                       # llamacpp, vllm or openai: what `%vllama load --engine` takes
    label: str                        # how people write it: llama.cpp, vLLM, the server's kind
    in_process: bool                  # runs in the kernel (False: a server the kernel talks to)
    model: str = ""
    context_length: int | None = None  # tokens, None when a server does not say
    context_option: str | None = None  # the load option that sets it (n_ctx, max_model_len)
    shared_from: int | None = None    # the pid of the notebook whose shared engine this is
    chat_template: bool | None = None  # the model has one (None: a server applies its own)
    thinking: str | None = None       # how the model marks thinking: think, harmony (None: it does not)
    think_values: tuple = ()          # the values of `think` the model's switch takes
    tool_calls: str | None = None     # how the model writes a tool call (server: the server parses them)
    images: bool = False              # it can be shown images
    why_no_images: str | None = None  # why not, when it is not that the model has no vision part
    grammar: bool = False             # GBNF grammars
    json_schema: bool = False         # output constrained to a JSON schema
    logprobs: bool = False
    top_k: bool = False               # top_k reaches the sampler
    ignore_eos: bool = False          # the end of text can be ignored
    samplers: tuple = ()              # the sampling controls (options.SAMPLERS) that reach its sampler
    close_thought: bool = False       # max_thinking: the engine can end a thought after N tokens
    embeddings: bool = False
    speculation: str | None = None    # the speculative decoding in use (ngram), None: none
    parallel: int | None = 1          # sequences decoded at once (None: as many as the engine schedules)
    concurrent: bool = False          # requests may run at once from several threads
    lora: bool = False                # LoRA adapters can be added (v.lora.add)
    adapters: tuple = ()              # the names of the adapters added, which a request's lora= may name


def think_values(template: str | None) -> tuple:
    """The values of `think` a chat template's switch takes: True/False where it has a switch,
    the levels where it reads reasoning_effort (True then means 'its default level')."""
    t = template or ""
    switch = _switch(t)
    values: tuple = (True, False) if switch else ()
    if "reasoning_effort" in t:
        values = tuple(dict.fromkeys(values + (True,) + THINK_LEVELS))
    return values


def think_switch(template: str | None) -> str | None:
    return _switch(template or "")


def _switch(t: str) -> str | None:
    if "enable_thinking" in t:
        return "enable_thinking"
    if "thinking" in t and ("if thinking" in t or "thinking is" in t or "thinking ==" in t):
        return "thinking"   # Granite's switch
    return None
