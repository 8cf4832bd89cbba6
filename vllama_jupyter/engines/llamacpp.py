"""llama.cpp in the kernel's process (llama-cpp-python), with a token loop that detokenizes
incrementally: each token costs the same, however long the completion grows."""
from __future__ import annotations

import codecs
import ctypes
import gc
import inspect
import json
import logging
import os
import random
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from ..templates import PLAIN_STOPS, check_messages, plain_prompt, render_template
from ..errors import VllamaError, notice
from ..models import ModelRef
from ..result import Delta, Stream
from ..sampling import Sampling, StopMatcher
from .base import BaseEngine


def check_gguf(path: Path) -> dict:
    """Read a GGUF file's header and tensor table; a truncated or corrupt file is a clear error.

    Returns the few metadata fields we use (architecture, context length, shape, chat template).
    A file is read once: check() and load() of the same unchanged file share the result."""
    try:
        st = path.stat()
    except OSError:
        return _read_gguf(path)   # says clearly what is wrong with it
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _META:
        _META.clear()   # only the file being loaded is worth keeping
        _META[key] = _read_gguf(path)
    return _META[key]


_META: dict = {}


def _read_gguf(path: Path) -> dict:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:
        raise VllamaError(f"{path} is not a valid GGUF file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}); "
                          "it may be truncated: download or convert it again") from None
    meta = {}
    for key, field in reader.fields.items():
        if key in ("general.architecture", "tokenizer.chat_template") or key.endswith(_SHAPE_KEYS):
            value = field.parts[field.data[0]]
            meta[key] = bytes(value).decode("utf-8", "replace") if field.types and field.types[0].name == "STRING" \
                else int(value[0])
    del reader
    return meta


_SHAPE_KEYS = (".context_length", ".block_count", ".embedding_length", ".attention.head_count",
               ".attention.head_count_kv")


def _check_options(options: dict) -> None:
    import llama_cpp

    allowed = set(inspect.signature(llama_cpp.Llama.__init__).parameters) - {"self", "model_path", "kwargs"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise VllamaError(f"unknown llama.cpp option {unknown[0]!r}: see help(llama_cpp.Llama) for the options")
    for key, least in (("n_ctx", 16), ("n_batch", 1), ("n_ubatch", 1), ("n_threads", 1), ("n_threads_batch", 1)):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
            raise VllamaError(f"{key} must be a whole number >= {least} (got {v!r})"
                              + ("; leave it out to use the context the model was trained on" if key == "n_ctx" else ""))
    for key in ("type_k", "type_v"):
        v = options.get(key)
        if v is not None and v not in CACHE_TYPES.values():
            raise VllamaError(f"{key} must be a KV cache type number: " + ", ".join(f"{n} ({k})" for k, n in CACHE_TYPES.items()))


def _arch(meta: dict) -> str:
    return meta.get("general.architecture", "")


def trained_context(meta: dict) -> int:
    return meta.get(f"{_arch(meta)}.context_length", 4096)


def kv_bytes(meta: dict, n_ctx: int) -> int:
    """f16 K and V for every layer and position (llama.cpp's default cache types)."""
    a = _arch(meta)
    layers, embd = meta.get(f"{a}.block_count", 32), meta.get(f"{a}.embedding_length", 4096)
    heads = meta.get(f"{a}.attention.head_count", 32) or 1
    kv_heads = meta.get(f"{a}.attention.head_count_kv", heads)
    return 2 * layers * n_ctx * (embd // heads) * kv_heads * 2


def check_memory(path: Path, meta: dict, n_ctx: int) -> None:
    import psutil

    need = kv_bytes(meta, n_ctx) + path.stat().st_size
    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        raise VllamaError(f"a context of {n_ctx:,} tokens needs about {need / 2**30:.1f} GiB (KV cache + weights) "
                          f"but {free / 2**30:.1f} GiB of memory is free: use a smaller n_ctx "
                          f"(the model was trained on {trained_context(meta):,})")


def probe(path: Path) -> None:
    """Read the model's architecture, hyper-parameters and vocabulary (no weights): a model this
    llama.cpp cannot run is refused here, before anything loaded is given up."""
    import llama_cpp

    route_logs()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    logs.clear()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise VllamaError(f"llama.cpp {llama_cpp.__version__} cannot run {path.name}: {last_error()}")
    llama_cpp.llama_model_free(model)


# -- llama.cpp's own log lines go to Python logging (quiet unless the logger is turned up) ---
log = logging.getLogger("vllama_jupyter.llamacpp")
log.addHandler(logging.NullHandler())  # quiet unless the user configures logging
log.propagate = False
logs: deque[str] = deque(maxlen=20)   # the latest warnings and errors, for error messages
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level
_callback = None


def route_logs() -> None:
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    last = [logging.DEBUG]

    def on_log(level, text, _user):
        lvl = last[0] if level == 5 else _LEVELS.get(level, logging.DEBUG)
        last[0] = lvl
        line = text.decode("utf-8", "replace").rstrip()
        if line.strip(" ."):
            if lvl >= logging.WARNING:
                logs.append(line)
            log.log(lvl, line)
    _callback = llama_cpp.llama_log_callback(on_log)  # kept: C holds a pointer to it
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def last_error() -> str:
    """The most telling recent llama.cpp log line: the reason it gave, else the last error."""
    for line in reversed(logs):
        if "error loading model:" in line:
            return " ".join(line.split("error loading model:", 1)[1].split())[:200]
    for line in reversed(logs):
        if any(w in line.lower() for w in ("error", "failed", "unknown")):
            return " ".join(line.split())[:200]
    return " ".join(logs[-1].split())[:200] if logs else "llama.cpp gave no reason"


CACHE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


class Detokenizer:
    """Token ids to text one token at a time; UTF-8 split across tokens comes out whole.
    `pieces` caches each token's bytes (shared across requests of one model)."""

    def __init__(self, llm, pieces: dict[int, bytes] | None = None):
        self.llm = llm
        self.pieces = {} if pieces is None else pieces
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.decode = self.utf8.decode

    def feed(self, tok: int) -> str:
        piece = self.pieces.get(tok)
        if piece is None:
            piece = self.pieces[tok] = self.llm.detokenize([tok])
        return self.decode(piece)

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


class Engine(BaseEngine):
    """llama.cpp engine. Options go to `llama_cpp.Llama` (n_ctx, n_threads, n_gpu_layers, ...)."""

    name = "llamacpp"

    def __init__(self) -> None:
        super().__init__()
        self.llm = None
        self.ref: ModelRef | None = None
        self.template: str | None = None
        self.load_seconds = 0.0

    @classmethod
    def check(cls, ref: ModelRef, options: dict) -> ModelRef:
        """Options, GGUF header, an architecture this llama.cpp knows, and memory for the context."""
        _check_options(options)
        meta = check_gguf(ref.path)
        check_memory(ref.path, meta, options.get("n_ctx") or min(trained_context(meta), 8192))
        probe(ref.path)
        return ref

    def load(self, ref: ModelRef, **options) -> None:
        import llama_cpp
        import psutil

        route_logs()
        meta = check_gguf(ref.path)
        ctx_train = trained_context(meta)
        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1  # llama.cpp's default is half the logical CPUs
        opts = {"n_ctx": min(ctx_train, 8192), "verbose": False, "n_threads": threads, "n_threads_batch": threads,
                "n_gpu_layers": -1 if llama_cpp.llama_supports_gpu_offload() else 0}
        opts.update(options)
        t0 = time.perf_counter()
        logs.clear()
        try:
            self.llm = llama_cpp.Llama(model_path=str(ref.path), **opts)
        except (ValueError, RuntimeError, OSError) as e:
            raise VllamaError(f"llama.cpp refused it ({_first_line(e)}; {last_error()})") from None
        self.load_seconds = time.perf_counter() - t0
        if opts["n_ctx"] > ctx_train:
            notice(f"the context ({opts['n_ctx']:,} tokens) is longer than the {ctx_train:,} {ref.name} was "
                   "trained on: text past that point may be poor")
        self.ref = ref
        self.model_name = ref.name
        self.template = meta.get("tokenizer.chat_template")
        self._eos = self.llm.token_eos()
        self._vocab = self.llm._model.vocab
        self._eog: dict[int, bool] = {}
        self._pieces: dict[int, bytes] = {}
        special = lambda i: self.llm.detokenize([i], special=True).decode("utf-8", "replace")  # noqa: E731
        self._bos_text, self._eos_text = special(self.llm.token_bos()), special(self._eos)

    def _is_eog(self, tok: int) -> bool:
        eog = self._eog.get(tok)
        if eog is None:
            import llama_cpp

            eog = self._eog[tok] = tok == self._eos or bool(llama_cpp.llama_vocab_is_eog(self._vocab, tok))
        return eog

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        add_bos = not (special and self._bos_text and text.startswith(self._bos_text))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def vocab_size(self) -> int:
        return self.llm.n_vocab()

    def context_length(self) -> int:
        return self.llm.n_ctx()

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", "replace")

    def chat_prompt(self, messages: list[dict]) -> str:
        check_messages(messages)
        if not self.template:
            return plain_prompt(messages)
        return render_template(self.template, messages, bos=self._bos_text, eos=self._eos_text)

    def chat(self, messages: list[dict], sampling: Sampling | None = None) -> Stream:
        s = sampling or Sampling()
        if not self.template and not s.stop:
            s = replace(s, stop=PLAIN_STOPS)
        return self._stream(self.chat_prompt(messages), s, special=bool(self.template))

    def stream(self, prompt, sampling: Sampling | None = None) -> Stream:
        return self._stream(prompt, sampling, special=False)

    def _stream(self, prompt, sampling, special: bool) -> Stream:
        self._require()
        s = sampling or Sampling()
        self.check_prompt(prompt)
        ids = self.tokenize(prompt, special=special) if isinstance(prompt, str) else [int(t) for t in prompt]
        n_ctx = self.llm.n_ctx()
        if len(ids) >= n_ctx:
            raise VllamaError(f"the prompt is {len(ids)} tokens but the context holds {n_ctx}: "
                              "shorten the prompt or load the model with a larger n_ctx")
        grammar = self._grammar(s.json_schema) if s.json_schema else None
        max_new = min(s.max_tokens, n_ctx - len(ids))
        return Stream(lambda: self._loop(ids, s, max_new, grammar), prompt_tokens=len(ids), engine=self.name,
                      model=self.model_name)

    def _grammar(self, schema: dict):
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
            # JSON strings may not hold raw control characters (llama.cpp's own converter agrees)
            gbnf = gbnf.replace(r'char ::= [^"\\]', r'char ::= [^"\\\x7F\x00-\x1F]')
            return LlamaGrammar.from_string(gbnf, verbose=False)
        except Exception as e:
            raise VllamaError(f"this JSON schema cannot be turned into a grammar: {e}") from None

    def _loop(self, ids: list[int], s: Sampling, max_new: int, grammar):
        llm = self.llm
        llm.set_seed(s.seed if s.seed is not None else random.randrange(2**31))
        tokens = llm.generate(ids, top_k=s.top_k, top_p=s.top_p, min_p=0.0, temp=s.temperature,
                              repeat_penalty=1.0, grammar=grammar)
        detok = Detokenizer(llm, self._pieces)
        stops = StopMatcher(s.stop)
        # the per-token path: names bound once, no stop matching when there are no stops
        feed, clock, eog = detok.feed, time.perf_counter, (None if s.ignore_eos else self._is_eog)
        cut = stops.feed if s.stop else (lambda text: (text, False))
        held: list[int] = []
        n = 0
        try:
            for tok in tokens:
                if eog is not None and eog(tok):
                    yield Delta(detok.flush() + stops.flush(), tuple(held), clock(), "stop")
                    return
                n += 1
                held.append(tok)
                text, hit = cut(feed(tok))
                if hit or n >= max_new:
                    if not hit:
                        text += cut(detok.flush())[0] + stops.flush()
                    yield Delta(text, tuple(held), clock(), "stop" if hit else "length")
                    return
                if text:
                    yield Delta(text, tuple(held), clock())
                    held = []
        finally:
            tokens.close()

    def _require(self) -> None:
        if self.llm is None:
            raise VllamaError("no model is loaded: call load() first")

    def info(self) -> dict:
        import llama_cpp
        import psutil

        self._require()
        gpu = llama_cpp.llama_supports_gpu_offload()
        return {"engine": self.name, "version": llama_cpp.__version__, "model": self.model_name,
                "path": str(self.ref.path), "device": "gpu offload" if gpu else "cpu",
                "context_length": self.llm.n_ctx(), "threads": self.llm.n_threads,
                "model_bytes": self.ref.path.stat().st_size, "rss_bytes": psutil.Process().memory_info().rss,
                "chat_template": "from GGUF" if self.template else "plain", "load_seconds": round(self.load_seconds, 3)}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
            gc.collect()
            release_heap()


def release_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS stays high)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]
