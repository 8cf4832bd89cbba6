"""vLLM in the kernel's process: its async engine (AsyncLLM) runs on a background event-loop
thread; each request is bridged to a synchronous iterator of deltas. Closing the iterator (or a
KeyboardInterrupt) cancels the request's task, which aborts it inside vLLM. `batch` submits every
request at once so continuous batching does the work."""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import os
import queue
import threading
import time
import weakref

from ..capabilities import Capabilities
from ..options import forced
from ..templates import PLAIN_STOPS, for_template
from ..errors import VllamaError, first_line
from ..models import ModelRef
from ..result import Result, Stream, finished
from ..sampling import Sampling, with_seed
from .base import BaseEngine, check_room, template_capabilities
from .remote import VLLM as SAMPLERS   # the sampling controls vLLM's SamplingParams take
from .vllm_stream import DONE, as_delta, cancel_tasks, drain, think_then_answer
from .children import alive, cmdline, reap, rss, stop_resource_tracker
from . import speculative
from .vllm_options import check_options, gpu_present, nvidia

_ids = itertools.count()
_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()   # this process's vLLM engines

class Engine(BaseEngine):
    """vLLM engine. Options go to vllm.AsyncEngineArgs (dtype, max_model_len,
    gpu_memory_utilization, tensor_parallel_size, pipeline_parallel_size,
    distributed_executor_backend='ray' for multi-node, quantization, enforce_eager, ...)
    plus cpu_kv_cache_gb on CPU hosts."""

    name = "vllm"

    def __init__(self) -> None:
        super().__init__()
        _ENGINES.add(self)
        self.speculative: str | None = None   # "ngram": vLLM's prompt lookup
        self.llm = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ref: ModelRef | None = None
        self.load_seconds = 0.0
        self.options: dict = {}
        self._children: list = []   # the processes vLLM started for this engine
        self._cores: list = []
        self._pooler = None
        self.on_gpu = False
        self._gpu: tuple | None = None   # (devices, bytes used before the load, total) on NVIDIA GPUs

    @classmethod
    def check(cls, ref: ModelRef, options: dict, replacing: bool = True) -> ModelRef:
        if "lora" in options:
            raise VllamaError("lora: LoRA adapters are on the llamacpp engine for now: load a GGUF model with "
                              "engine='llamacpp', or leave lora out")
        check_options(options)
        config = ref.path / "config.json"
        try:
            trained = json.loads(config.read_text()).get("max_position_embeddings")
        except (OSError, ValueError, AttributeError) as e:
            raise VllamaError(f"{config} cannot be read ({type(e).__name__}), so vLLM cannot load {ref.name}") from None
        want = options.get("max_model_len")
        if want and isinstance(trained, int) and want > trained:
            raise VllamaError(f"max_model_len {want:,} is more than the {trained:,} tokens {ref.name} was trained on: "
                              f"use max_model_len <= {trained}")
        return ref

    @classmethod
    def plan(cls, ref, n_ctx: int | None = None, options: dict | None = None):
        """vLLM's KV cache for `ref` with max_model_len `n_ctx` (default: the trained length), nothing loaded."""
        from .vllm_plan import plan

        options = dict(options or {})
        check_options(options)
        if n_ctx:
            options["max_model_len"] = n_ctx
        if gpu_present() and not nvidia():
            raise VllamaError("a vLLM plan reads the card through NVML, so it is made for NVIDIA GPUs only")
        return plan(ref, options, gpu_present())

    # -- life cycle -----------------------------------------------------------------------
    def load(self, ref: ModelRef, **options) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # keep notebooks clean; set it to see more
        check_options(options)
        opts = dict(options)
        kv_gb = opts.pop("cpu_kv_cache_gb", None)
        ray_address = opts.pop("ray_address", None)
        kind = opts.pop("speculative", None)
        if kind:
            opts["speculative_config"] = speculative.vllm_config(kind)
        self.speculative = kind
        if ray_address:
            os.environ["RAY_ADDRESS"] = ray_address   # where vLLM's Ray executor joins the cluster
        on_gpu = gpu_present()
        if not on_gpu:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_gb or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 1))
            if ref.source == "embedded":
                opts.setdefault("dtype", "float32")  # the same f16 weights, computed in f32 as llama.cpp does
        opts.setdefault("disable_log_stats", True)
        # compact JSON under a schema: free whitespace lets small models loop on newlines
        opts.setdefault("structured_outputs_config", {"backend": "xgrammar", "disable_any_whitespace": True})
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if on_gpu and opts.get("distributed_executor_backend") != "ray" and nvidia():
            from .gpu_memory import plan
            self._gpu = plan(ref, opts)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vllama-vllm-loop", daemon=True)
        self.thread.start()
        self.on_gpu = on_gpu

        async def start():
            return AsyncLLM.from_engine_args(AsyncEngineArgs(model=str(ref.path), **opts))
        t0 = time.perf_counter()
        try:
            self.llm = self.start_instance(start)
        except BaseException as e:
            self.close()
            if isinstance(e, (VllamaError, KeyboardInterrupt)):
                raise
            raise VllamaError(f"vLLM could not start it ({first_line(e)})") from None
        self.load_seconds = time.perf_counter() - t0
        self.ref, self.model_name, self.options = ref, ref.name, opts
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.model_config.max_model_len

    def start_instance(self, factory):
        """Start a vLLM instance on the engine's loop; its processes are the engine's to reap."""
        import psutil

        before = {c.pid for c in psutil.Process().children()}
        try:
            return self._wait(factory(), translate=False)
        finally:
            new = [c for c in psutil.Process().children() if c.pid not in before]
            self._children += new
            # the engine-core processes: their death is the engine's, before vLLM itself notices
            self._cores += [c for c in new if "EngineCore" in cmdline(c)]

    def embed(self, texts, normalize: bool = True):
        """Embeddings from a pooling instance of the same model (started by the first call)."""
        self._require()
        if self._pooler is None:
            from .vllm_embed import Pooler
            self._pooler = Pooler(self)
        return self._pooler.embed(texts, normalize)

    def close(self) -> None:
        if self._pooler is not None:
            self._pooler.close()
            self._pooler = None
        if self.loop is not None:
            try:  # first the loop's tasks (output handlers), so none sees the engine go away
                asyncio.run_coroutine_threadsafe(cancel_tasks(), self.loop).result(timeout=30)
            except Exception:
                pass
        if self.llm is not None:
            llm, self.llm = self.llm, None
            try:
                llm.shutdown()
            except Exception:
                pass  # a dead engine may not shut down cleanly; its processes are gone already
            del llm
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()
            self.loop = self.thread = None
        if not any(e.llm is not None for e in _ENGINES):   # another engine's processes still use it
            stop_resource_tracker()
        reap(self._children)
        self._children = []
        gc.collect()
        if self._gpu is not None:
            from .gpu_memory import check_returned
            gpu, self._gpu = self._gpu, None
            check_returned(*gpu)

    def _wait(self, coro, translate: bool = True):
        """Run `coro` on the engine's loop and wait; an interrupt cancels it."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise
        except Exception as e:
            if not translate:
                raise
            raise self._translate(e) from None

    def _translate(self, e: BaseException) -> BaseException:
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(e, EngineDeadError) or self.dead():
            return VllamaError(self.dead() or "the vLLM engine process has died: reload it with %vllama load "
                               "(or vllama_jupyter.load()); the kernel is fine")
        if isinstance(e, VllamaError):
            return e
        return VllamaError(f"vLLM refused the request: {first_line(e)}")

    def _require(self) -> None:
        if self.llm is None:
            raise VllamaError("no model is loaded: call load() first")
        why = self.dead()
        if why:
            raise VllamaError(why)

    def dead(self) -> str | None:
        if self.llm is not None and (self.llm.errored or not all(alive(p) for p in self._cores)):
            return ("the vLLM engine process has died: reload it with %vllama load "
                    "(or vllama_jupyter.load()); the kernel is fine")
        return None

    # -- requests -------------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        # a rendered template (special) carries its own BOS; the tokenizer reads special tokens in any text
        return list(self.tokenizer.encode(text, add_special_tokens=not special))

    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def context_length(self) -> int:
        return self.max_model_len

    def version(self) -> str:
        import vllm
        return vllm.__version__

    def settings(self) -> dict:
        return dict(self.options)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _prepare(self, prompt, s: Sampling, special: bool = False):
        self._require()
        self.check_prompt(prompt)
        ids = self.tokenize(prompt, special) if isinstance(prompt, str) else [int(t) for t in prompt]
        check_room(len(ids), self.max_model_len, "max_model_len")
        s = with_seed(s)
        return ids, s, self._params(s, min(s.max_tokens, self.max_model_len - len(ids)))

    def _params(self, s: Sampling, max_tokens: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        return SamplingParams(
            max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0,
            seed=s.seed, stop=list(s.stop) or None, ignore_eos=s.ignore_eos,
            repetition_penalty=s.repetition_penalty, presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty, min_p=s.min_p, logit_bias=s.logit_bias or None,
            min_tokens=s.min_tokens, bad_words=list(s.banned) or None,
            output_kind=RequestOutputKind.DELTA, skip_special_tokens=True, logprobs=s.logprobs,
            structured_outputs=StructuredOutputsParams(json=s.json_schema) if s.json_schema else
            StructuredOutputsParams(grammar=s.grammar) if s.grammar else None)

    def _input(self, ids: list[int]):
        renderer = getattr(self.llm, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl"):
            return renderer.render_cmpl([{"prompt_token_ids": ids}])[0]
        return {"prompt_token_ids": ids}

    def _complete(self, prompt, s: Sampling, special: bool = False) -> Stream:
        ids, s, params = self._prepare(prompt, s, special)
        return self._new_stream(lambda: self._deltas(ids, params), len(ids), s, self.max_model_len)

    def _deltas(self, ids: list[int], params):
        """Submit the request, then yield its deltas; leaving early cancels it inside vLLM."""
        q: queue.Queue = queue.Queue()
        engine_input = self._input(ids)

        async def pump():
            try:
                async for out in self.llm.generate(engine_input, params, f"vllama-{next(_ids)}"):
                    q.put((time.perf_counter(), out))
            except BaseException as e:  # CancelledError included: the consumer has gone
                q.put(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
            finally:
                q.put(DONE)
        fut = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while True:
                item = q.get()
                if item is DONE:
                    return
                if isinstance(item, BaseException):
                    raise self._translate(item)
                t, out = item
                yield as_delta(out.outputs[0], t, params.logprobs)
        finally:
            if not fut.done():
                fut.cancel()  # cancels generate(), which aborts the request in the engine
                drain(q)

    def why_no_images(self) -> str | None:
        if getattr(getattr(self.llm, "model_config", None), "is_multimodal_model", False):
            return ("vllama sends no images to an in-process vLLM yet: serve the model with `vllm serve` and "
                    "connect with engine='openai', or load its GGUF with its mmproj on llama.cpp")
        return None

    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or None

    def render(self, template: str, messages: list[dict], tools, kwargs: dict) -> str:
        try:   # transformers' own renderer, as vLLM's server uses
            return self.tokenizer.apply_chat_template(for_template(messages), tools=tools, tokenize=False,
                                                      add_generation_prompt=True, **kwargs)
        except Exception as e:
            raise VllamaError(f"the model's chat template refused these messages: {first_line(e)}") from None

    def capabilities(self) -> Capabilities:
        if self.llm is None:
            raise VllamaError("no model is loaded: call load() first")
        return Capabilities(
            "vllm", "vLLM", True, model=self.model_name, context_length=self.max_model_len,
            context_option="max_model_len", **template_capabilities(self.chat_template()), images=False,
            why_no_images=self.why_no_images(), grammar=True, json_schema=True, logprobs=True, top_k=True, ignore_eos=True,
            samplers=SAMPLERS, close_thought=True, embeddings=True, speculation=self.speculative, parallel=None, concurrent=True)

    def _chat(self, messages: list[dict], s: Sampling, tools: list[dict] | None) -> Stream:
        templated = bool(self.chat_template())
        if not templated and not s.stop:
            s = dataclasses.replace(s, stop=PLAIN_STOPS)
        prompt, splitter = self.chat_plan(messages, s, tools)
        if forced(s.tool_choice):   # a forced call: the call's grammar
            s = dataclasses.replace(s, grammar=self.forced_call(tools, s, splitter))
        s = dataclasses.replace(s, think=None, tool_choice=None)
        if s.max_thinking is None:
            st = self._complete(prompt, s, special=templated)
        else:
            st = think_then_answer(self, prompt, s, splitter, templated)
        st.splitter = splitter
        return st

    def _batch(self, prompts: list, s: Sampling) -> list[Result]:
        """All prompts submitted at once (continuous batching), with a progress bar."""
        from tqdm.auto import tqdm

        prepared = [self._prepare(p, s) for p in prompts]
        bar = tqdm(total=len(prepared), desc="vllm batch", unit="req", leave=False, disable=len(prepared) < 8)

        async def one(ids, _s, params):
            t0 = time.perf_counter()
            deltas = []
            async for out in self.llm.generate(self._input(ids), params, f"vllama-{next(_ids)}"):
                deltas.append(as_delta(out.outputs[0], time.perf_counter(), params.logprobs))
            bar.update(1)
            return t0, deltas

        async def run_all():
            return await asyncio.gather(*(one(*p) for p in prepared))
        try:
            done = self._wait(run_all())
        finally:
            bar.close()
        return [finished(deltas, t_start=t0, prompt_tokens=len(ids), engine=self.name, model=self.model_name,
                         context_length=self.max_model_len, provenance=lambda s=s: self.provenance(s))
                for (ids, s, _), (t0, deltas) in zip(prepared, done)]

    def info(self) -> dict:
        import psutil
        import vllm

        self._require()
        proc = psutil.Process()
        children = proc.children(recursive=True)
        memory = proc.memory_info().rss + sum(rss(c) for c in children)
        cfg = self.llm.model_config
        device = "cuda" if gpu_present() else "cpu"
        return {"engine": self.name, "version": vllm.__version__, "model": self.model_name,
                "path": str(self.ref.path), "device": device, "dtype": str(cfg.dtype).replace("torch.", ""),
                "context_length": self.max_model_len, "engine_processes": len(children),
                "rss_bytes": memory, "load_seconds": round(self.load_seconds, 1),
                "chat_template": "from tokenizer" if getattr(self.tokenizer, "chat_template", None) else "plain",
                **({"speculative": self.speculative} if self.speculative else {})}

