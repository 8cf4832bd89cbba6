"""The one gate: a request (sampling, chat or not, tools, messages) held against what the loaded
engine and model can do (capabilities.Capabilities), before any engine sees it. What cannot be
honoured is refused in one line that names the option and the fix; nothing is silently ignored.
Every surface reaches an engine through BaseEngine.stream/chat/batch, which call `check`."""
from __future__ import annotations

from .capabilities import Capabilities
from .errors import VllamaError
from .messages import check_messages, has_images
from .options import BY_NAME, CHAT_ONLY, SAMPLERS, forced, is_set

CHAT_FIX = "use chat(), %%vllama --chat or -s"
NO_PROJECTOR = ("this model has no vision projector: load one with mmproj=… (an mmproj-*.gguf beside the "
                "model is found by itself) or pick a vision model")


def check(caps: Capabilities, s, chat: bool, tools: list | None = None, messages: list | None = None) -> None:
    """Raise one VllamaError line for the first option in `s` (or image in `messages`) this engine
    and model cannot honour."""
    if messages is not None:
        check_images(caps, check_messages(messages))
    if not chat:
        for name in CHAT_ONLY:
            if getattr(s, name) is not None:
                raise VllamaError(f"{name} applies to chat: {CHAT_FIX}")
    _sampler(caps, s)
    _constraints(caps, s)
    _adapter(caps, s)
    if chat:
        _tools(caps, s, tools)
        _think(caps, s)
        _max_thinking(caps, s)


def check_images(caps: Capabilities, messages: list[dict]) -> None:
    if has_images(messages) and not caps.images:
        raise VllamaError(caps.why_no_images or NO_PROJECTOR)


def _sampler(caps: Capabilities, s) -> None:
    if not caps.top_k and s.top_k not in (BY_NAME["top_k"].default, 0):
        raise VllamaError(f"top_k={s.top_k} cannot reach the {caps.label} (it has no top_k field): "
                          "leave top_k out, or use a vLLM or llama.cpp server")
    if not caps.ignore_eos and s.ignore_eos:
        raise VllamaError(f"ignore_eos cannot reach the {caps.label} (it has no such field): "
                          "leave ignore_eos out, or use a vLLM server or llama.cpp's llama-server")
    if s.logprobs is not None and not caps.logprobs:
        raise VllamaError(f"logprobs: the {caps.label} engine gives none: leave logprobs out")
    for name in SAMPLERS:
        if name not in caps.samplers and is_set(name, getattr(s, name)):
            where = " (llama.cpp's own sampler)" if name in LLAMA_ONLY else ""
            raise VllamaError(f"{name}={getattr(s, name)!r} cannot reach the {caps.label}{where}: leave {name} out"
                              + (f", or use {LLAMA_ONLY[name]}" if name in LLAMA_ONLY else ""))


# controls only llama.cpp has, and where to find them
LLAMA_ONLY = {n: "the llamacpp engine or llama.cpp's llama-server" for n in
              ("repeat_last_n", "typical_p", "dry_multiplier", "xtc_probability", "xtc_threshold")}


def _constraints(caps: Capabilities, s) -> None:
    if s.grammar is not None and not caps.grammar:
        raise VllamaError(f"grammar: {caps.label} takes no grammar: use json_schema, or a vLLM or llama.cpp server")
    if s.json_schema is not None and not caps.json_schema:
        raise VllamaError(f"json_schema: the {caps.label} takes no JSON schema: give a grammar instead, or use "
                          "a vLLM server or llama.cpp's llama-server")
    if (s.json_schema is not None) + (s.grammar is not None) + forced(s.tool_choice) > 1:
        raise VllamaError("give one constraint: json_schema, grammar, or a forced tool_choice")
    constrained = s.json_schema is not None or s.grammar is not None or forced(s.tool_choice)
    for name in ("min_tokens", "banned"):
        if constrained and is_set(name, getattr(s, name)):
            raise VllamaError(f"{name} cannot be combined with a grammar, a JSON schema or a forced tool call (the "
                              "constraint decides which tokens may come, and where the output ends): give one of them")


def _adapter(caps: Capabilities, s) -> None:
    if s.lora is None:
        return
    if not caps.lora:
        raise VllamaError(f"lora={s.lora!r}: the {caps.label} engine takes no LoRA adapters here: load the model "
                          "on llama.cpp (engine='llamacpp')")
    if s.lora not in caps.adapters:
        have = f"added: {', '.join(caps.adapters)}" if caps.adapters else "none is added"
        raise VllamaError(f"lora={s.lora!r}: no adapter of that name ({have}): add it with v.lora.add(PATH, "
                          f"name={s.lora!r}) or %vllama lora add PATH --name {s.lora}")


def _tools(caps: Capabilities, s, tools) -> None:
    named = f"tool_choice={s.tool_choice!r}: " if s.tool_choice is not None else ""
    if s.tool_choice is not None and not tools:
        raise VllamaError(f"tool_choice={s.tool_choice!r} needs tools: pass tools=[...] (or --tools f,g)")
    if not tools or s.tool_choice == "none":
        return
    if caps.chat_template is False:
        raise VllamaError(f"{named}this model has no chat template, so it cannot be offered tools: load a model "
                          "whose template has them")
    if caps.tool_calls is None and not caps.in_process:
        raise VllamaError(f"{named}the {caps.label} makes no tool calls vllama can read: leave tools out, or use a "
                          "vLLM server or llama.cpp's llama-server")
    if caps.tool_calls is None:
        raise VllamaError(f"{named}this model's chat template writes tool calls in a format vllama cannot read (it "
                          "reads Hermes/Qwen, Mistral, gpt-oss and Llama 3 calls): leave tools out, or use a server "
                          "that parses them")


def _think(caps: Capabilities, s) -> None:
    think = s.think
    if think is None or think in caps.think_values:
        return
    if caps.chat_template is False:
        raise VllamaError("this model has no chat template, so it has no thinking switch: leave think out")
    if not caps.in_process and not caps.think_values:
        raise VllamaError(f"think: the {caps.label} has no thinking switch vllama can set: leave think out")
    levels = any(isinstance(v, str) for v in caps.think_values)
    if isinstance(think, str):
        raise VllamaError(f"this model's chat template has no reasoning levels, so think={think!r} cannot be honoured: "
                          "use think=True or False" + ("" if caps.think_values else " (and it has no switch)"))
    if levels:
        raise VllamaError("this model always reasons (its template has levels, no off switch): use think='low'")
    raise VllamaError(f"this model's chat template has no thinking switch, so think={think!r} cannot be honoured: "
                      "leave think out")


def _max_thinking(caps: Capabilities, s) -> None:
    if s.max_thinking is None:
        return
    if not caps.close_thought:
        raise VllamaError(f"max_thinking needs an in-process engine (llamacpp or vllm): the {caps.label} "
                          "cannot be told to close a thought; leave it out")
    if caps.thinking is None:
        raise VllamaError("this model does not mark its thinking (its template has no <think> or channels), "
                          "so max_thinking cannot be honoured: leave it out")
    if s.grammar is not None or s.json_schema is not None or forced(s.tool_choice):
        raise VllamaError("max_thinking cannot be combined with a grammar, a JSON schema or a forced tool call "
                          "(the constraint covers the whole output): give one of them")
