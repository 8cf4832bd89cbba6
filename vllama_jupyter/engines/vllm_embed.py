"""vLLM embeddings: one vLLM instance runs one kind of model runner, so embeddings come from a
second instance over the same model with the pooling runner (mean pooling, as llama.cpp does for
models without their own), started by the first embed() and stopped with the engine."""
from __future__ import annotations

import asyncio
import itertools

from ..errors import VllamaError
from .base import as_matrix, check_texts

_ids = itertools.count()
# options of the generating instance that mean nothing to a pooling one
_GENERATION_ONLY = ("structured_outputs_config",)


class Pooler:
    def __init__(self, engine):
        self.engine = engine   # the generating vllm Engine: its loop, reference and options
        self.llm = None

    def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        eng = self.engine
        opts = {k: v for k, v in eng.options.items() if k not in _GENERATION_ONLY}
        opts.setdefault("max_model_len", eng.max_model_len)
        if "gpu_memory_utilization" not in opts and eng.on_gpu:
            opts["gpu_memory_utilization"] = 0.1   # the generating instance holds the rest

        async def start():
            return AsyncLLM.from_engine_args(AsyncEngineArgs(
                model=str(eng.ref.path), runner="pooling", convert="embed",
                pooler_config={"pooling_type": "MEAN", "use_activation": False}, **opts))
        try:
            self.llm = eng.start_instance(start)
        except VllamaError:
            raise
        except Exception as e:
            raise VllamaError(f"vLLM could not start a pooling instance for embeddings ({str(e).splitlines()[0][:200]})") from None

    def embed(self, texts, normalize: bool = True):
        from vllm import PoolingParams

        items = check_texts(texts)
        eng = self.engine
        limit = eng.max_model_len
        prompts = []
        for i, t in enumerate(items):
            ids = eng.tokenize(t)
            if len(ids) > limit:
                raise VllamaError(f"text {i} is {len(ids)} tokens but the context holds {limit}: "
                                  "split it into shorter pieces")
            prompts.append({"prompt_token_ids": ids})
        if self.llm is None:
            self.start()

        async def one(prompt):
            last = None
            async for out in self.llm.encode(prompt, PoolingParams(task="embed"), f"vllama-embed-{next(_ids)}"):
                last = out
            return last.outputs.data.float().tolist()

        async def run_all():   # submitted together: the engine batches them
            return await asyncio.gather(*(one(p) for p in prompts))
        return as_matrix(eng._wait(run_all()), normalize)

    def close(self) -> None:
        if self.llm is not None:
            llm, self.llm = self.llm, None
            try:
                llm.shutdown()
            except Exception:
                pass
