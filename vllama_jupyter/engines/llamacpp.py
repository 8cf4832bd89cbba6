"""llama.cpp in the kernel's process (llama-cpp-python), with a token loop that detokenizes
incrementally: each token costs the same, however long the completion grows."""
from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import time
from dataclasses import replace

from ..capabilities import Capabilities
from ..options import SAMPLERS, forced
from ..reasoning import CLOSE, Splitter
from ..templates import PLAIN_STOPS, render_template
from ..errors import VllamaError, first_line, notice
from ..models import ModelRef
from ..result import Stream, finished
from ..sampling import Sampling, with_seed
from .base import BaseEngine, as_matrix, check_room, check_texts, template_capabilities
from . import llama_private as private
from . import llamacpp_grammar as grammars
from . import speculative
from .llamacpp_batch import PARALLEL, Route, Seq, carry_over
from .llamacpp_loop import Detokenizer, Handover, token_loop
from .llamacpp_lora import Adapters, lora_spec, prepare_for
from .worker import Worker, shared as shared_worker
from .fit import check as check_memory
from .gguf import check_options, check_gguf, last_error, logs, probe, route_logs, trained_context


OURS = ("mmproj", "speculative", "parallel", "lora")   # load options of ours, not llama_cpp.Llama's


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
        self._batcher = None   # llamacpp_batch.Batch: the context batch() decodes many sequences in
        self._route = Route(self)   # alone in the one-sequence loop, or beside others in the batch
        self._halt = threading.Event()   # set by close(): running requests end at their next token
        self.parallel = PARALLEL.default
        self._options: dict = {}
        self._worker: Worker | None = None   # the process's llama.cpp thread, which runs all compute
        self.projector = None   # vision.Projector: the mmproj, when the model takes images
        self.speculative: str | None = None   # "ngram": prompt-lookup drafts (speculative.py)
        self.lora = Adapters(self)   # LoRA adapters added to the model (llamacpp_lora)

    @classmethod
    def check(cls, ref: ModelRef, options: dict, replacing: bool = True) -> ModelRef:
        """Options, GGUF header, memory for the context, and (when a loaded model would be freed for
        it) an architecture and vocabulary this llama.cpp can read."""
        from .vision import check_projector, find_projector

        check_options({k: v for k, v in options.items() if k not in OURS})
        speculative.check(options.get("speculative"))
        for name, (path, scale) in lora_spec(options.get("lora")).items():   # checked and converted now
            prepare_for(ref, path, name, scale)
        PARALLEL.check(options.get("parallel", PARALLEL.default))
        meta = check_gguf(ref.path)
        check_memory(ref.path, meta, options.get("n_ctx") or min(trained_context(meta), 8192), options)
        if replacing:
            probe(ref.path)
        projector = find_projector(ref.path, options.get("mmproj"))
        if projector is not None:
            check_projector(projector)
        return ref

    @classmethod
    def plan(cls, ref, n_ctx: int | None = None, options: dict | None = None):
        from .fit import plan, plan_of

        check_options({k: v for k, v in (options or {}).items() if k not in OURS})
        if isinstance(ref, ModelRef):
            return plan(ref.path, check_gguf(ref.path), n_ctx, options, ref.name)
        from .gguf import hub_header   # a Hub model not downloaded: its header by ranged reads, its sizes from the listing

        sizes = dict(ref.files)
        weights = sum(n for f, n in ref.files if f != ref.projector)
        return plan_of(hub_header(ref.repo, ref.chosen, sizes[ref.chosen]), weights, sizes.get(ref.projector, 0), n_ctx,
                       options, ref.name)

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
        self.parallel = PARALLEL.check(opts.pop("parallel", PARALLEL.default))
        adapters = lora_spec(opts.pop("lora", None))
        from .vision import find_projector

        mmproj = find_projector(ref.path, opts.pop("mmproj", None))
        t0 = time.perf_counter()
        logs.clear()
        self._worker = shared_worker()
        try:
            self.llm = llama_cpp.Llama(model_path=str(ref.path), **opts)
        except (ValueError, RuntimeError, OSError) as e:
            raise VllamaError(f"llama.cpp refused it ({first_line(e, 200)}; {last_error()})") from None
        if mmproj is not None:
            self._load_projector(mmproj)
        self.ref, self.model_name = ref, ref.name
        for name, (path, scale) in adapters.items():   # a load's adapters: one that fails fails the load
            self.lora.add(self.lora.prepare(path, name, scale))
        self.load_seconds = time.perf_counter() - t0
        self._options = {**opts, **({"mmproj": str(mmproj)} if mmproj else {}),
                         **({"speculative": self.speculative} if self.speculative else {}),
                         **({"parallel": self.parallel} if self.parallel != PARALLEL.default else {})}
        if opts["n_ctx"] > ctx_train:
            notice(f"the context ({opts['n_ctx']:,} tokens) is longer than the {ctx_train:,} {ref.name} was "
                   "trained on: text past that point may be poor")
        self.template = meta.get("tokenizer.chat_template")
        self._eos = self.llm.token_eos()
        private.check(self.llm)
        self._vocab = private.vocab(self.llm)
        self._eog: dict[int, bool] = {}
        self._eog_ids: tuple[int, ...] | None = None
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

    def eog_ids(self) -> tuple[int, ...]:
        """Every end-of-generation token of the vocabulary (what min_tokens holds back)."""
        if self._eog_ids is None:
            import llama_cpp

            is_eog = llama_cpp.llama_vocab_is_eog
            self._eog_ids = tuple(i for i in range(self.llm.n_vocab()) if is_eog(self._vocab, i))
        return self._eog_ids

    def banned_ids(self, text: str) -> list[list[int]]:
        """The token sequences that write `text`, at the start of a word and inside one (as vLLM's bad_words)."""
        seqs: list[list[int]] = []
        for t in dict.fromkeys((text, " " + text.lstrip(" "))):
            ids = self.inner_tokens(t)
            if ids and ids not in seqs:
                seqs.append(ids)
        return seqs

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

    def capabilities(self) -> Capabilities:
        self._require()
        return Capabilities(
            "llamacpp", "llama.cpp", True, model=self.model_name, context_length=self.llm.n_ctx(),
            context_option="n_ctx", **template_capabilities(self.template), images=self.projector is not None,
            grammar=True, json_schema=True, logprobs=True, top_k=True, ignore_eos=True, samplers=SAMPLERS,
            close_thought=True, embeddings=True, speculation=self.speculative, parallel=self.parallel,
            concurrent=self.parallel > 1, lora=True, adapters=tuple(self.lora.added))

    def _chat(self, messages: list[dict], s: Sampling, tools: list[dict] | None) -> Stream:
        self._require()
        if not self.template and not s.stop:
            s = replace(s, stop=PLAIN_STOPS)
        prompt, splitter = self.chat_plan(messages, s, tools)
        grammar = None
        if forced(s.tool_choice):
            grammar = grammars.from_gbnf(self.llm, self.forced_call(tools, s, splitter))
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

    def _complete(self, prompt, s: Sampling) -> Stream:
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
        check_room(n_prompt, n_ctx, "n_ctx", f" ({sum(extra['image_tokens'])} of them for images)" if extra else "")
        if s.json_schema:   # gate.check let one constraint through at most
            grammar = grammars.from_schema(s.json_schema)
        elif s.grammar:
            grammar = grammars.from_gbnf(self.llm, s.grammar)
        max_new = min(s.max_tokens, n_ctx - n_prompt)
        limit = None
        if s.max_thinking is not None:   # gate.check: the model marks its thinking
            close = self.llm.tokenize(CLOSE[splitter.fmt].encode("utf-8"), add_bos=False, special=True)
            limit = (s.max_thinking, Splitter(splitter.fmt, splitter.state == "reasoning"), close)
        s = with_seed(s)
        # a conversation's follow-up re-uses the KV cache of its earlier turns (fast); a first
        # turn or a completion is evaluated afresh: a re-used prefix's logits differ in the last bits (another batch
        # shape), which can change a sampled token, so the same prompt, settings and seed always
        # give the same tokens. prompt_cache=True/False sets both.
        reuse = (chat if self.prompt_cache is None else self.prompt_cache) and images is None
        drafts = speculative.counts(self.speculative) if self.speculative else None
        facts = {"prompt_cache": reuse, **extra}   # read when the record is made: the route below may change them

        def start():
            # alone, a request runs the one-sequence loop (prompt cache, speculation); one that
            # comes while others run decodes beside them (the thought budget needs the loop)
            with self._route.one() as beside:
                if beside and self.parallel > 1 and images is None and limit is None and s.lora is None:
                    facts["prompt_cache"] = False
                    yield from self._route.source(Seq(ids, s, max_new, grammar, facts=facts))
                    return
                if drafts is not None:
                    facts["speculative"] = drafts
                join = self._route.others_wait if self.parallel > 1 and images is None and s.lora is None else None

                def loop():   # on the worker: the request's adapter first, then its tokens
                    same = self.lora.use(s.lora)
                    return token_loop(self, ids, s, max_new, grammar, reuse and same, limit, drafts, join)
                for d in self._worker.iterate(loop, self._halt):
                    if isinstance(d, Handover):   # others came: it goes on beside them
                        q = carry_over(d, s, max_new)
                        q.facts = facts
                        yield from self._route.source(q)
                        return
                    yield d
        return self._new_stream(start, n_prompt, s, n_ctx, facts, splitter=splitter)

    def _batch(self, prompts: list, s: Sampling) -> list:
        """The prompts decoded together, `parallel` at once (a load option, 16 by default), each with
        its own seed, grammar, stops and logprobs, beside any other live request (llamacpp_batch);
        max_thinking closes thoughts in the one-sequence loop, so it runs them in turn, as does
        parallel=1. An interrupt ends them all at the next step."""
        if len(prompts) < 2 or s.max_thinking is not None or self.parallel == 1 or s.lora is not None:
            return super()._batch(prompts, s)
        self._require()
        n_ctx = self.llm.n_ctx()
        seqs = []
        for p in prompts:
            ids = self.tokenize(p, special=False) if isinstance(p, str) else [int(t) for t in p]
            check_room(len(ids), n_ctx, "n_ctx")
            si = with_seed(s)
            grammar = grammars.from_schema(si.json_schema) if si.json_schema else \
                grammars.from_gbnf(self.llm, si.grammar) if si.grammar else None
            seqs.append(Seq(ids, si, min(si.max_tokens, n_ctx - len(ids)), grammar))
        t0 = time.perf_counter()   # every request is in from the start: TTFT counts the wait for a place
        live = self._route.join(seqs)
        try:
            deltas = [list(live.deltas(q)) for q in seqs]
        finally:
            live.cancel(seqs)   # those not read to their end (an interrupt) stop at the next step
        return [finished(d, t_start=t0, prompt_tokens=len(q.ids), engine=self.name, model=self.model_name,
                         context_length=n_ctx, provenance=lambda q=q: {**self.provenance(q.s), "prompt_cache": False,
                                                                       **q.facts})
                for q, d in zip(seqs, deltas)]

    def _check_batch_memory(self) -> None:
        """The batch context holds a KV cache of its own, as large as the loaded one: one line when
        the memory free now cannot take it."""
        from ..sizes import size_text
        from .fit import MARGIN, plan

        p = plan(self.ref.path, check_gguf(self.ref.path), self.llm.n_ctx(), self._options)
        need = p.kv + p.compute
        if need > p.free * MARGIN:
            raise VllamaError(f"decoding {self.parallel} requests at once takes a second context that needs "
                              f"{size_text(need)}, and {size_text(p.free)} is free: load with parallel=1 (in turn) "
                              "or a smaller n_ctx")

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
                raise VllamaError(f"llama.cpp could not make an embedding context ({first_line(e, 200)}; {last_error()})") from None
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
                **({"speculative": self.speculative} if self.speculative else {}), "parallel": self.parallel,
                **({"adapters": self.lora.records()} if self.lora.added else {})}

    def close(self) -> None:
        # requests still running (shared ones run beside the owner's unload) end at their next
        # token; the contexts go once the worker has left them
        self._halt.set()
        if self._route.live is not None:
            self._route.live.stop()
        if self._worker is not None:
            self._worker.call(lambda: None)
        self._route.live = None
        if self.projector is not None:
            self.projector.close()
            self.projector = None
        self._worker = None   # the shared thread stays: other engines may use it
        if self._embedding is not None:
            self._embedding.close()
            self._embedding = None
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
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



__all__ = ["Engine", "Detokenizer", "release_heap"]

