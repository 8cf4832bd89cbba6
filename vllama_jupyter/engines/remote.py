"""What the openai engine is pointed at: server presets, the /v1 URL, the typed reference and
the options, all checked without touching the network."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import VllamaError
from ..options import Option
from ..models import EMBEDDED_NAMES, RemoteRef


@dataclass(frozen=True)
class Preset:
    label: str
    url: str
    top_k: bool = False          # takes the top_k extension
    ignore_eos: bool = False     # takes the ignore_eos extension
    schema_field: str | None = "response_format"   # where a JSON schema goes (None: it takes none)
    grammar: bool = False        # takes a GBNF grammar (in structured_outputs where that is its schema field)
    extra: tuple = ()            # body fields that make its sampling match the in-process engines
    think: bool = False          # takes the thinking switch (chat_template_kwargs, reasoning_effort)
    tools: bool = True           # makes tool calls (as tool_calls, or as text vllama reads)
    samplers: tuple = ()         # the sampling controls (options.SAMPLERS) it takes
    rename: tuple = ()           # (option, its field on this server) where the name differs


OPENAI = ("presence_penalty", "frequency_penalty", "logit_bias")   # the OpenAI API's own
VLLM = (*OPENAI, "repetition_penalty", "min_p", "min_tokens", "banned")
LLAMA = (*OPENAI, "repetition_penalty", "min_p")      # llama-cpp-python's server
LLAMA_SERVER = (*LLAMA, "repeat_last_n", "typical_p", "dry_multiplier", "xtc_probability", "xtc_threshold")
REPEAT = (("repetition_penalty", "repeat_penalty"),)


PRESETS = {
    "vllm": Preset("vLLM", "http://127.0.0.1:8000/v1", top_k=True, ignore_eos=True, schema_field="structured_outputs",
                   grammar=True, think=True, samplers=VLLM),
    "ollama": Preset("Ollama", "http://127.0.0.1:11434/v1", samplers=OPENAI[:2]),
    # llama-cpp-python's server (what `%vllama serve llamacpp` starts): grammars, no schema or ignore_eos field,
    # tool calls only in chat formats of its own
    "llamacpp-server": Preset("llama-cpp-python server", "http://127.0.0.1:8000/v1", top_k=True, schema_field=None,
                              grammar=True, tools=False, extra=(("repeat_penalty", 1.0), ("min_p", 0.0)),
                              samplers=LLAMA, rename=REPEAT),
    # llama.cpp's own llama-server
    "llama-server": Preset("llama.cpp llama-server", "http://127.0.0.1:8080/v1", top_k=True, ignore_eos=True,
                           schema_field="json_schema", grammar=True, think=True,
                           extra=(("repeat_penalty", 1.0), ("min_p", 0.0)), samplers=LLAMA_SERVER, rename=REPEAT),
    "max": Preset("MAX", "http://127.0.0.1:8000/v1", top_k=True, ignore_eos=True),
    "sglang": Preset("SGLang", "http://127.0.0.1:30000/v1", top_k=True, ignore_eos=True, think=True,
                     samplers=(*OPENAI[:2], "repetition_penalty", "min_p")),
    "tgi": Preset("TGI", "http://127.0.0.1:8080/v1", samplers=OPENAI[:2]),
    "vllama": Preset("vllama shared engine", "", top_k=True, ignore_eos=True, schema_field="json_schema", grammar=True,
                     think=True, samplers=VLLM),   # until the share says what the engine behind it takes
    "openai": Preset("OpenAI-compatible", "", samplers=OPENAI),
}


NUMBERS = (Option("concurrency", "int", 8, "requests sent at once", low=1),
           Option("context_length", "int", None, "the server's context in tokens", low=16, optional=True),
           Option("timeout", "float", 60.0, "seconds to wait for the server", low=0, low_open=True))
OPTIONS = ("url", "preset", "api_key_env", "timeout", "concurrency", "context_length",
           "shared_by", "shared_file")   # the last two: set when using another notebook's shared engine


def base_url(options: dict) -> str:
    """The server's /v1 URL from url= or a preset, checked for shape (no network)."""
    import httpx

    preset = options.get("preset")
    if preset is not None and preset not in PRESETS:
        raise VllamaError(f"unknown server preset {preset!r}: use one of {', '.join(PRESETS)}")
    url = options.get("url") or (PRESETS[preset].url if preset else "")
    if not url:
        raise VllamaError("the openai engine needs a server: give url='http://host:port/v1' or a preset")
    if not isinstance(url, str):
        raise VllamaError(f"url must be text like 'http://127.0.0.1:8000/v1' (got {type(url).__name__})")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError) as e:
        raise VllamaError(f"the url {url!r} cannot be read ({e}): write it like http://127.0.0.1:8000/v1") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise VllamaError(f"the url {url!r} needs http:// or https:// and a host, like http://127.0.0.1:8000/v1")
    url = str(parsed).rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def remote_ref(model, options: dict) -> RemoteRef:
    if model is not None and not isinstance(model, str):
        raise VllamaError(f"the model of a server is its name as text (got {type(model).__name__})")
    name = (model or "").strip()
    return RemoteRef(base_url(options), None if name.lower() in EMBEDDED_NAMES else name)


def check_options(options: dict) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise VllamaError(f"unknown option {unknown[0]!r} for the openai engine: use {', '.join(OPTIONS)}")
    base_url(options)
    env = options.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not os.environ.get(env)):
        raise VllamaError(f"the environment variable {env} (api_key_env) is not set: export it before loading")
    for o in NUMBERS:
        o.check(options.get(o.name, o.default))
