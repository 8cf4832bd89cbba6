"""llama.cpp in the kernel's process (llama-cpp-python), with a token loop that detokenizes
incrementally: each token costs the same, however long the completion grows."""
from __future__ import annotations

import codecs
import ctypes
import gc
import inspect
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..chat import PLAIN_STOPS, check_messages, plain_prompt, render_template
from ..errors import VllamaError
from ..models import ModelRef
from ..result import Delta, Stream
from ..sampling import Sampling, StopMatcher
from .base import BaseEngine, check_prompt


def check_gguf(path: Path) -> dict:
    """Read a GGUF file's header and tensor table; a truncated or corrupt file is a clear error.

    Returns the few metadata fields we use (context length, chat template, architecture)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:
        raise VllamaError(f"{path} is not a valid GGUF file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}); "
                          "it may be truncated: download or convert it again") from None
    meta = {}
    for key, field in reader.fields.items():
        if key == "general.architecture" or key.endswith((".context_length",)) or key == "tokenizer.chat_template":
            value = field.parts[field.data[0]]
            meta[key] = bytes(value).decode("utf-8", "replace") if field.types and field.types[0].name == "STRING" \
                else int(value[0])
    del reader
    return meta


def _check_options(options: dict) -> None:
    import llama_cpp

    allowed = set(inspect.signature(llama_cpp.Llama.__init__).parameters) - {"self", "model_path", "kwargs"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise VllamaError(f"unknown llama.cpp option {unknown[0]!r}: see help(llama_cpp.Llama) for the options")


class Detokenizer:
    """Token ids to text one token at a time; UTF-8 split across tokens comes out whole.
    `pieces` caches each token's bytes (shared across requests of one model)."""

    def __init__(self, llm, pieces: dict[int, bytes] | None = None):
        self.llm = llm
        self.pieces = {} if pieces is None else pieces
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, tok: int) -> str:
        piece = self.pieces.get(tok)
        if piece is None:
            piece = self.pieces[tok] = self.llm.detokenize([tok])
        return self.utf8.decode(piece)

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

    @staticmethod
    def check(ref: ModelRef, options: dict) -> None:
        """Validate model and options before anything already loaded is given up."""
        _check_options(options)
        check_gguf(ref.path)

    def load(self, ref: ModelRef, **options) -> None:
        import llama_cpp

        _check_options(options)
        meta = check_gguf(ref.path)
        arch = meta.get("general.architecture", "")
        ctx_train = meta.get(f"{arch}.context_length", 4096)
        import psutil

        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1  # llama.cpp's default is half the logical CPUs
        opts = {"n_ctx": min(ctx_train, 8192), "verbose": False, "n_threads": threads, "n_threads_batch": threads,
                "n_gpu_layers": -1 if llama_cpp.llama_supports_gpu_offload() else 0}
        opts.update(options)
        t0 = time.perf_counter()
        try:
            self.llm = llama_cpp.Llama(model_path=str(ref.path), **opts)
        except (ValueError, RuntimeError) as e:
            raise VllamaError(f"llama.cpp could not load {ref.path}: {e}") from None
        self.load_seconds = time.perf_counter() - t0
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
        t_start = time.perf_counter()
        self._require()
        s = sampling or Sampling()
        check_prompt(prompt)
        ids = self.tokenize(prompt, special=special) if isinstance(prompt, str) else list(prompt)
        n_ctx = self.llm.n_ctx()
        if len(ids) >= n_ctx:
            raise VllamaError(f"the prompt is {len(ids)} tokens but the context holds {n_ctx}: "
                              "shorten the prompt or load the model with a larger n_ctx")
        grammar = self._grammar(s.json_schema) if s.json_schema else None
        max_new = min(s.max_tokens, n_ctx - len(ids))
        return Stream(self._loop(ids, s, max_new, grammar), prompt_tokens=len(ids), engine=self.name,
                      model=self.model_name, t_start=t_start)

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
        held: list[int] = []
        n = 0
        try:
            for tok in tokens:
                if not s.ignore_eos and self._is_eog(tok):
                    yield Delta(detok.flush() + stops.flush(), tuple(held), time.perf_counter(), "stop")
                    return
                n += 1
                held.append(tok)
                text, hit = stops.feed(detok.feed(tok))
                last = n >= max_new
                if hit or last:
                    if not hit:
                        text += stops.feed(detok.flush())[0] + stops.flush()
                    yield Delta(text, tuple(held), time.perf_counter(), "stop" if hit else "length")
                    return
                if text:
                    yield Delta(text, tuple(held), time.perf_counter())
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
