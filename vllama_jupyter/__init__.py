"""vllama-jupyter: the fastest local LLM engine for this machine, inside Jupyter.

    %load_ext vllama_jupyter
    %%vllama
    ROMEO:

Python API (one engine per kernel): load, unload, status, generate, stream, chat, batch, hardware.
Importing this package imports no engine (no vllm, llama_cpp or torch).
"""
from __future__ import annotations

from .errors import BusyError, VllamaError
from .result import Delta, Result, Stream
from .sampling import Sampling
from .session import get_session
from .tools import MAX_ROUNDS
from .about import __version__
from .seam import IDLE_TIMEOUT_S
from .mcp_tools import TIMEOUT as MCP_TIMEOUT

__all__ = ["load", "unload", "status", "capabilities", "fit", "lora", "generate", "stream", "chat", "batch", "count_tokens", "embed", "serve", "share", "stop_sharing", "client", "mcp", "panel", "bench_widget", "hardware",
           "Sampling", "Result", "Stream", "Delta", "VllamaError", "BusyError", "__version__"]


def load(model: str | None = None, engine: str | None = None, **options) -> dict:
    """Load a model into the kernel's engine (default: the embedded tiny-shakespeare model,
    on the engine chosen for this machine). Options go to the engine. Returns status()."""
    return get_session().load(model, engine, **options)


def unload() -> None:
    """Free the loaded engine and its memory."""
    get_session().unload()


def status() -> dict:
    """Engine, model, device, memory, and why this engine was chosen."""
    return get_session().status()


def fit(model: str | None = None, n_ctx: int | None = None, engine: str | None = None, **options):
    """Whether `model` fits in memory with a context of `n_ctx` tokens, before loading it: weights,
    KV cache, compute buffer and projector against the free memory, and the largest context that
    fits. Nothing is loaded or freed."""
    return get_session().fit(model, n_ctx, engine, **options)


class _Lora:
    """LoRA adapters on the loaded model (llama.cpp): v.lora.add(path, name=None, scale=1.0) takes a
    GGUF adapter or a PEFT folder (converted once with llama.cpp's converter), v.lora.remove(name),
    v.lora.list(). A request names one: v.generate(..., lora=NAME), %%vllama --lora NAME; none: the
    base model. v.load(model, lora={name: path}) adds them with the load."""

    def add(self, path, name: str | None = None, scale: float = 1.0) -> dict:
        return get_session().lora_add(path, name, scale)

    def remove(self, name: str) -> None:
        get_session().lora_remove(name)

    def list(self) -> list[dict]:
        return get_session().lora_list()

    def __repr__(self) -> str:
        from .engines.lora import listing

        return listing(self.list())


lora = _Lora()


def capabilities():
    """What the loaded engine and model can do (a Capabilities value: chat template, thinking
    switch, tool calls, images, grammar, JSON schema, logprobs, ...); the default model is loaded
    first when none is. An option it cannot honour fails its request in one line."""
    return get_session().capabilities()


def generate(prompt, sampling: Sampling | None = None, images=None, **sampling_options) -> Result:
    """Complete `prompt` (text or token ids) and return the Result. With `images` (matplotlib
    figures, PIL images, numpy arrays, PNG/JPEG bytes or paths) a vision model is asked about them
    in one chat turn; the record keeps each image's SHA-256, size and mode.
    Sampling options: max_tokens, temperature, top_p, top_k, seed, stop, ignore_eos, json_schema,
    logprobs (0-20: each token's log-probability and that many alternatives, in Result.logprobs).
    Result.record tells how it was made (engine, model SHA-256, every setting with the seed used)."""
    return get_session().generate(prompt, sampling, images=images, **sampling_options)


def stream(prompt, sampling: Sampling | None = None, images=None, **sampling_options) -> Stream:
    """Like generate(), but returns a Stream of Deltas; `.result` once it ends. Close it to stop."""
    return get_session().stream(prompt, sampling, images=images, **sampling_options)


def chat(message, sampling: Sampling | None = None, system: str | None = None, keep: bool = True,
         tools=None, run_tools: bool = False, max_rounds: int = MAX_ROUNDS, images=None, **sampling_options):
    """Continue the kernel's conversation with `message` (text, or OpenAI-shaped messages whose
    content may be a list of parts); returns a Stream of the reply. keep=False answers it alone.
    Options besides sampling: think, max_thinking, tool_choice. `tools`: Python functions the
    model may call; `images` go with a text message (as in generate()); tool calls come back in `result.tool_calls`, and nothing runs unless
    run_tools=True, which runs the tool loop to its end and returns the last round's Result
    (`.rounds` holds the earlier ones; each call and result is printed; at most `max_rounds`)."""
    session = get_session()
    if run_tools:
        return session.chat_loop(message, sampling, system=system, keep=keep, tools=tools, run_tools=True,
                                 show=print, max_rounds=max_rounds, images=images, **sampling_options)
    return session.chat(message, sampling, system=system, keep=keep, tools=tools, images=images, **sampling_options)


def batch(prompts: list, sampling: Sampling | None = None, **sampling_options) -> list[Result]:
    """Complete many prompts: together on engines that batch (vLLM, llama.cpp), in turn otherwise."""
    return get_session().batch(prompts, sampling, **sampling_options)


def count_tokens(text: str) -> int:
    """How many tokens `text` is for the loaded model's tokenizer (servers: their tokenize endpoint)."""
    return get_session().count_tokens(text)


def embed(texts, normalize: bool = True):
    """Embeddings of `texts` (a string or a list of strings) as a numpy array (n, dim), rows of
    length 1 when `normalize`. llama.cpp: an embedding context over the model file (its own pooling,
    else mean); vLLM: a pooling instance of the model; servers: /v1/embeddings."""
    return get_session().embed(texts, normalize)


def share(idle_timeout: float = IDLE_TIMEOUT_S, port: int | None = None) -> dict:
    """Serve this kernel's loaded engine to your other notebooks and to any OpenAI client on the
    machine: the OpenAI API on 127.0.0.1 (`port`, default a free one) with a random token,
    described in a runtime file (mode 0600) in Jupyter's runtime directory. Kernels that load with
    no model named use it instead of loading their own copy. It stops with this kernel, on
    unload() or stop_sharing(), or after `idle_timeout` seconds without requests. Returns its url,
    runtime file, client count and copy-paste lines for scripts (see client())."""
    return get_session().share(idle_timeout, port)


def client(api: str = "openai", **kwargs):
    """A client on a shared engine: this kernel's when it shares one, else the newest of your other
    notebooks'. `openai.OpenAI` (chat completions, responses), or with api='anthropic' an
    `anthropic.Anthropic` (messages); keyword arguments go to the client."""
    from . import sharing

    return sharing.client(get_session().sharing, api, **kwargs)


def mcp(server, name: str | None = None, env: dict | None = None, timeout: float = MCP_TIMEOUT.default):
    """An MCP server's tools for the model: `server` is a command line ('python -m mcp_server_time';
    'python' is this kernel's Python), a list of its words, or an http(s):// URL (streamable HTTP).
    Pass the returned server in tools=[...] beside notebook functions, or name it in
    %%vllama --mcp NAME; calls run only with run_tools=True. A started server's process ends with
    the kernel. `env`: variables for its process; `timeout`: seconds to start and per call.
    Asking again for a running server returns it; %vllama mcp list | stop NAME."""
    from . import mcp_tools

    return mcp_tools.connect(server, name, env, timeout)


def stop_sharing() -> None:
    """Stop serving other notebooks (they get one clear line, then load their own)."""
    get_session().stop_sharing()


def serve(kind: str, model: str | None = None, load: bool = True, **options):
    """Start a local OpenAI-compatible server ('llamacpp', 'vllm' or 'max': Modular's MAX) on
    127.0.0.1 with `model` (default: embedded) and use it as the engine; stopped by unload() or
    when the kernel exits."""
    return get_session().serve(kind, model, load, **options)


def panel(throttle: float = 0.1):
    """The engine panel (ipywidgets): model picker, load/unload, sampling, prompt, Generate/Stop."""
    from .widgets import panel as _panel
    return _panel(throttle)


def bench_widget():
    """The benchmark widget (ipywidgets): engines, workload, concurrency, Run, table, plots, CSV."""
    from .widgets import bench_widget as _bw
    return _bw()


def hardware():
    """Facts about this machine (cached); print(hardware().summary()) for a short summary."""
    from .hardware import hardware as _hw
    return _hw()


def load_ipython_extension(ipython) -> None:
    from .magics import VllamaMagics

    from .labstatus import register

    magics = VllamaMagics(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)  # so %config VllamaMagics.<trait> works
    register(ipython)  # the JupyterLab status-bar item talks to this


def unload_ipython_extension(ipython) -> None:
    pass


def _jupyter_labextension_paths() -> list[dict]:
    """Where JupyterLab finds the prebuilt front-end extension."""
    return [{"src": "labextension", "dest": "vllama-jupyter"}]
