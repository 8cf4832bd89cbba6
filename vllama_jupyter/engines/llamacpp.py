"""llama.cpp in the kernel's process (llama-cpp-python), with a token loop that detokenizes
incrementally: each token costs the same, however long the completion grows."""
from __future__ import annotations

import codecs
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import replace

from ..reasoning import CLOSE, Splitter
from ..templates import PLAIN_STOPS, render_template
from ..errors import VllamaError, notice
from ..models import ModelRef
from ..result import Delta, Stream, TokenLogprob
from ..sampling import Sampling, StopMatcher, with_seed
from .base import BaseEngine, as_matrix, check_texts
from . import speculative
from .worker import Worker, shared as shared_worker
from .logprobs import log_softmax_top
from .gguf import check_options, check_gguf, check_memory, last_error, logs, probe, route_logs, trained_context


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
        self.prompt_cache: bool | None = None   # None: conversations re-use the cache, completions not
        self._embedding = None
        self._options: dict = {}
        self._worker: Worker | None = None   # the process's llama.cpp thread, which runs all compute
        self.projector = None   # vision.Projector: the mmproj, when the model takes images
        self.speculative: str | None = None   # "ngram": prompt-lookup drafts (speculative.py)

    @classmethod
    def check(cls, ref: ModelRef, options: dict) -> ModelRef:
        """Options, GGUF header, an architecture this llama.cpp knows, and memory for the context."""
        from .vision import check_projector, find_projector

        check_options({k: v for k, v in options.items() if k not in ("mmproj", "speculative")})
        speculative.check(options.get("speculative"))
        meta = check_gguf(ref.path)
        check_memory(ref.path, meta, options.get("n_ctx") or min(trained_context(meta), 8192))
        probe(ref.path)
        projector = find_projector(ref.path, options.get("mmproj"))
        if projector is not None:
            check_projector(projector)
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
        # on the CPU, flash attention as llama.cpp's own tools resolve "auto" there (prompts ~4 % faster)
        opts.setdefault("flash_attn", opts["n_gpu_layers"] == 0)
        self.prompt_cache = opts.pop("prompt_cache", None)
        self.speculative = speculative.check(opts.pop("speculative", None))
        from .vision import find_projector

        mmproj = find_projector(ref.path, opts.pop("mmproj", None))
        t0 = time.perf_counter()
        logs.clear()
        self._worker = shared_worker()
        try:
            self.llm = llama_cpp.Llama(model_path=str(ref.path), **opts)
        except (ValueError, RuntimeError, OSError) as e:
            raise VllamaError(f"llama.cpp refused it ({_first_line(e)}; {last_error()})") from None
        if mmproj is not None:
            self._load_projector(mmproj)
        self.load_seconds = time.perf_counter() - t0
        self._options = {**opts, **({"mmproj": str(mmproj)} if mmproj else {}),
                         **({"speculative": self.speculative} if self.speculative else {})}
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

    def _load_projector(self, path) -> None:
        from .vision import Projector

        try:
            self.projector = self._worker.call(lambda: Projector(path, self.llm))
        except BaseException:
            self.llm.close()
            self.llm = None
            raise
        notice(f"images: {path.name} ({self.projector.kind} projector) loaded with the model")

    def image_marker(self) -> str | None:
        return self.projector.marker if self.projector else None

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

    def version(self) -> str:
        import llama_cpp
        return llama_cpp.__version__

    def settings(self) -> dict:
        return {**self._options, "prompt_cache": self.prompt_cache}

    def context_length(self) -> int:
        return self.llm.n_ctx()

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        return self.template

    def render(self, template: str, messages: list[dict], tools, kwargs: dict) -> str:
        return render_template(template, messages, bos=self._bos_text, eos=self._eos_text, tools=tools, kwargs=kwargs)

    def chat(self, messages: list[dict], sampling: Sampling | None = None, tools: list[dict] | None = None) -> Stream:
        self._require()
        s = sampling or Sampling()
        if not self.template and not s.stop:
            s = replace(s, stop=PLAIN_STOPS)
        prompt, splitter = self.chat_plan(messages, s, tools)
        grammar = None
        if s.tool_choice not in (None, "auto", "none"):
            grammar = self._gbnf(self.forced_call(tools, s, splitter))
        follow_up = any(m.get("role") == "assistant" for m in messages)
        images = self._images(messages, prompt)
        return self._stream(prompt, s, special=bool(self.template), chat=follow_up, splitter=splitter, grammar=grammar,
                            images=images)

    def prompt_tokens(self, messages: list[dict]) -> int:
        prompt = self.chat_prompt(messages)
        images = self._images(messages, prompt)
        return images[1].n_tokens if images else len(self.tokenize(prompt, special=bool(self.template)))

    def _images(self, messages: list[dict], prompt: str):
        """(the images, mtmd's chunks of the prompt) when the messages hold images, else None."""
        from ..images import in_messages
        from ..messages import check_messages, has_images

        msgs = check_messages(messages)
        if not has_images(msgs):
            return None
        images = in_messages(msgs)
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return images, self.projector.prepare(prompt, images, add_bos)

    def stream(self, prompt, sampling: Sampling | None = None) -> Stream:
        s = sampling or Sampling()
        if s.think is not None or s.max_thinking is not None or s.tool_choice is not None:
            raise VllamaError("think, max_thinking and tool_choice apply to chat: use chat(), %%vllama --chat or -s")
        return self._stream(prompt, s, special=False)

    def _stream(self, prompt, sampling, special: bool, chat: bool = False, splitter: Splitter | None = None,
                grammar=None, images=None) -> Stream:
        self._require()
        s = sampling or Sampling()
        self.check_prompt(prompt)
        extra: dict = {}
        if images is not None:   # mtmd holds the prompt's tokens, image tokens among them
            pictures, prepared = images
            ids = prepared
            n_prompt = prepared.n_tokens
            extra = {"images": [p.record() for p in pictures], "image_tokens": prepared.image_tokens}
        else:
            ids = self.tokenize(prompt, special=special) if isinstance(prompt, str) else [int(t) for t in prompt]
            n_prompt = len(ids)
        n_ctx = self.llm.n_ctx()
        if n_prompt >= n_ctx:
            what = f" ({sum(extra['image_tokens'])} of them for images)" if extra else ""
            raise VllamaError(f"the prompt is {n_prompt} tokens{what} but the context holds {n_ctx}: "
                              "shorten the prompt or load the model with a larger n_ctx")
        if sum(x is not None for x in (grammar, s.json_schema, s.grammar)) > 1:
            raise VllamaError("give one constraint: json_schema, grammar, or a forced tool_choice")
        if s.json_schema:
            grammar = self._grammar(s.json_schema)
        elif s.grammar:
            grammar = self._gbnf(s.grammar)
        max_new = min(s.max_tokens, n_ctx - n_prompt)
        limit = None
        if s.max_thinking is not None:   # chat_plan checked that the model marks its thinking
            close = self.llm.tokenize(CLOSE[splitter.fmt].encode("utf-8"), add_bos=False, special=True)
            limit = (s.max_thinking, Splitter(splitter.fmt, splitter.state == "reasoning"), close)
        s = with_seed(s)
        # a conversation's follow-up re-uses the KV cache of its earlier turns (fast); a first
        # turn or a completion is evaluated afresh: a re-used prefix's logits differ in the last bits (another batch
        # shape), which can change a sampled token, so the same prompt, settings and seed always
        # give the same tokens. prompt_cache=True/False sets both.
        reuse = (chat if self.prompt_cache is None else self.prompt_cache) and images is None
        drafts = speculative.counts(self.speculative) if self.speculative else None
        if drafts is not None:
            extra["speculative"] = drafts
        return self._new_stream(lambda: self._worker.iterate(lambda: self._loop(ids, s, max_new, grammar, reuse, limit,
                                                                                drafts)),
                                n_prompt, s, n_ctx, {"prompt_cache": reuse, **extra}, splitter=splitter)

    def _grammar(self, schema: dict):
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
            # JSON strings may not hold raw control characters (llama.cpp's own converter agrees)
            gbnf = gbnf.replace(r'char ::= [^"\\]', r'char ::= [^"\\\x7F\x00-\x1F]')
            return LlamaGrammar.from_string(gbnf, verbose=False)
        except Exception as e:
            raise VllamaError(f"this JSON schema cannot be turned into a grammar: {e}") from None

    def _gbnf(self, text: str):
        from llama_cpp.llama_grammar import LlamaGrammar

        import llama_cpp

        # parse it here, so a bad grammar fails before anything runs; the parser writes its
        # complaint to the C stderr, which is caught for the message
        with tempfile.TemporaryFile() as err:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(err.fileno(), 2)
            try:
                probe = llama_cpp.llama_sampler_init_grammar(self._vocab, text.encode("utf-8"), b"root")
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            err.seek(0)
            why = " ".join(err.read().decode("utf-8", "replace").split())[:160]
        if not probe:
            raise VllamaError(f"llama.cpp cannot read this grammar ({why or 'failed to parse'}): write it in GBNF, "
                              "starting with root ::= ...")
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(text, verbose=False)

    def _loop(self, ids: list[int], s: Sampling, max_new: int, grammar, reuse: bool, limit=None, drafts=None):
        llm = self.llm
        llm.set_seed(s.seed or 0)  # with_seed() gave sampled runs one; greedy ignores it
        if not isinstance(ids, list):   # a prompt with images: mtmd writes it into the cache first
            ids = ids.evaluate(self.projector, llm)
        elif not reuse:
            llm.reset()   # no prefix of an earlier request is kept
        plain = lambda prompt: llm.generate(prompt, top_k=s.top_k, top_p=s.top_p, min_p=0.0,  # noqa: E731
                                            temp=s.temperature, repeat_penalty=1.0, grammar=grammar)
        pick = speculative.greedy(llm) if s.temperature == 0 and grammar is None else None
        generate = lambda prompt: speculative.Decoder(llm, plain(prompt), drafts, pick)  # noqa: E731
        tokens = generate(ids)
        out_ids: list[int] = []
        thought = 0
        detok = Detokenizer(llm, self._pieces)
        stops = StopMatcher(s.stop)
        # the per-token path: names bound once, no stop matching when there are no stops
        feed, clock, eog = detok.feed, time.perf_counter, (None if s.ignore_eos else self._is_eog)
        cut = stops.feed if s.stop else (lambda text: (text, False))
        score = None if s.logprobs is None else self._scorer(s.logprobs, lambda: getattr(tokens, "row", -1))
        held: list[int] = []
        scored: list[TokenLogprob] = []
        lp = None
        n = 0
        try:
            while True:   # once more after a thought is closed (max_thinking)
                for tok in tokens:
                    if eog is not None and eog(tok):
                        yield Delta(detok.flush() + stops.flush(), tuple(held), clock(), "stop", logprobs=lp)
                        return
                    n += 1
                    held.append(tok)
                    if limit is not None:
                        out_ids.append(tok)
                    if score is not None:  # from this step's logits, before the next token is computed
                        scored.append(score(tok))
                        lp = tuple(scored)
                    piece, restart = feed(tok), False
                    if limit is not None:
                        follow = limit[1]
                        before = follow.state == "reasoning"
                        follow.feed(piece)
                        thought += before or follow.state == "reasoning"
                        if thought >= limit[0] and follow.state == "reasoning" and n + len(limit[2]) < max_new:
                            # the thought is long enough: close it (as the model would) and let it answer
                            tokens.close()
                            close_ids = limit[2]
                            n += len(close_ids)
                            out_ids.extend(close_ids)
                            limit = None
                            restart = True
                    text, hit = cut(piece)
                    if hit or n >= max_new:
                        if not hit:
                            text += cut(detok.flush())[0] + stops.flush()
                        yield Delta(text, tuple(held), clock(), "stop" if hit else "length", logprobs=lp)
                        return
                    if text:
                        yield Delta(text, tuple(held), clock(), logprobs=lp)
                        held = []
                        if score is not None:
                            scored, lp = [], ()
                    if restart:   # the closing tokens, as a delta of their own
                        yield Delta("".join(feed(t) for t in close_ids), tuple(held) + tuple(close_ids), clock())
                        held = []
                        tokens = generate(ids + out_ids)
                        break
                else:
                    return
        finally:
            tokens.close()

    def _scorer(self, n: int, row=lambda: -1):
        """token id -> TokenLogprob from the logits the token was just sampled from."""
        import llama_cpp
        import numpy as np

        ctx, vocab = self.llm._ctx.ctx, self.llm.n_vocab()
        text = self._piece_text
        work = np.empty(vocab, np.float32)
        n = min(n, vocab)

        def score(tok: int) -> TokenLogprob:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row()), shape=(vocab,))
            lse, best = log_softmax_top(logits, n, work)
            top = tuple((text(int(i)), float(logits[i]) - lse) for i in best)
            return TokenLogprob(text(tok), float(logits[tok]) - lse, top, tok)
        return score

    def _piece_text(self, tok: int) -> str:
        piece = self._pieces.get(tok)
        if piece is None:
            piece = self._pieces[tok] = self.llm.detokenize([tok])
        return piece.decode("utf-8", "replace")

    # -- embeddings -----------------------------------------------------------------------
    def embed(self, texts, normalize: bool = True):
        """An embedding context over the same file (the model's pooling, mean where it has none)."""
        self._require()
        items = check_texts(texts)
        emb = self._embedder()
        limit = emb.n_ctx()
        for i, t in enumerate(items):
            n = len(emb.tokenize(t.encode("utf-8")))
            if n > limit:
                raise VllamaError(f"text {i} is {n} tokens but the embedding context holds {limit}: "
                                  "split it into shorter pieces")
        return as_matrix(self._worker.call(lambda: emb.embed(items, normalize=False, truncate=False)), normalize)

    def _embedder(self):
        if self._embedding is None:
            import llama_cpp

            meta = check_gguf(self.ref.path)
            n_ctx = self.llm.n_ctx()
            check_memory(self.ref.path, meta, n_ctx)
            own = any(k.endswith(".pooling_type") for k in meta)
            logs.clear()
            try:
                self._embedding = llama_cpp.Llama(
                    model_path=str(self.ref.path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                    n_threads=self.llm.n_threads, verbose=False, n_gpu_layers=self._options.get("n_gpu_layers", 0),
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if own else llama_cpp.LLAMA_POOLING_TYPE_MEAN)
            except (ValueError, RuntimeError, OSError) as e:
                raise VllamaError(f"llama.cpp could not make an embedding context ({_first_line(e)}; {last_error()})") from None
        return self._embedding

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
                "chat_template": "from GGUF" if self.template else "plain", "load_seconds": round(self.load_seconds, 3),
                **({"images": f"{self.projector.path.name} ({self.projector.kind} projector)"} if self.projector else {}),
                **({"speculative": self.speculative} if self.speculative else {})}

    def close(self) -> None:
        if self.projector is not None:
            self.projector.close()
            self.projector = None
        self._worker = None   # the shared thread stays: other engines may use it
        if self._embedding is not None:
            self._embedding.close()
            self._embedding = None
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
