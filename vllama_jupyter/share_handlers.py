"""The shared engine's request handlers for the OpenAI API (models, completions and chat
completions with SSE streaming, embeddings, tokenize, health): a request is checked against the
token, read by share_wire's Plan, and run on the engine a lease from the session's seam gives."""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from contextlib import contextmanager
from dataclasses import asdict

import tornado.web
from tornado.iostream import StreamClosedError

from .errors import BusyError, VllamaError
from .seam import CLIENT_HEADER, SHARED_WAIT_S, UNSHARED
from .share_wire import Plan, adapters_of, usage

GROUP_S = 0.005   # the least time between two streamed events of one choice
EMBEDDING_FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         503: "service_unavailable", 500: "server_error"}


class Gone(Exception):
    """The client closed its connection."""


class Base(tornado.web.RequestHandler):
    needs_token = True

    def initialize(self, server) -> None:   # share_server.ShareServer
        self.server = server
        self.sharing = server.sharing
        self.gone = False

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def prepare(self) -> None:
        if not self.needs_token:
            return
        given = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.sharing.token}".encode()):
            self.fail(401, "a bearer token is required: it is in the shared engine's runtime file")
            return
        self.sharing.seen(self.request.headers.get(CLIENT_HEADER))

    def on_connection_close(self) -> None:
        self.gone = True

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": {"message": message, "type": TYPES.get(status, "error"), "code": status}})

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"error": {"message": self._reason, "type": TYPES.get(status_code, "error"),
                               "code": status_code}})

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise VllamaError("the request body must be a JSON object")
        return data

    async def blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.server.pool, fn, *args)

    async def answer(self, work) -> None:
        """Run `work()` (a coroutine), turning our errors into one-line OpenAI error bodies."""
        self.server.active += 1
        try:
            await work()
        except BusyError as e:
            self.fail(503, str(e))
        except VllamaError as e:
            self.fail(400, str(e))
        except Gone:
            pass
        finally:
            self.server.active -= 1

    def stopped(self) -> bool:
        if self.gone:
            raise Gone
        return self.sharing.stopped


def live_engine(sharing):
    """The shared engine, or None once it is unloaded or no longer shared."""
    eng = sharing.seam.engine()
    return None if sharing.stopped else eng


class Health(Base):
    needs_token = False   # as vLLM's: says only whether the engine is there

    def get(self) -> None:
        if live_engine(self.sharing) is None:
            return self.fail(503, "the shared engine is not loaded")
        self.finish({"status": "ok"})


class Models(Base):
    def get(self, name: str | None = None) -> None:
        eng, model = live_engine(self.sharing), self.sharing.seam.model
        if eng is None:
            return self.fail(503, UNSHARED)
        adapters = {a["name"]: a for a in eng.info().get("adapters", ())}
        if name is not None and name != model and name not in adapters:
            return self.fail(404, f"no model {name!r} here: this engine serves {model!r}"
                                  + (f" and its adapters {', '.join(adapters)}" if adapters else ""))
        card = {"id": model, "object": "model", "created": 0, "owned_by": "vllama-jupyter",
                "capabilities": asdict(eng.capabilities())}   # what the model behind the share can do
        try:
            card["max_model_len"] = eng.context_length()
        except (VllamaError, AttributeError):
            pass
        # each LoRA adapter is a model of its own, as vLLM's --lora-modules serves them
        cards = [card] + [{"id": a["name"], "object": "model", "created": 0, "owned_by": "vllama-jupyter",
                           "parent": model, "root": a["source"], "lora": a} for a in adapters.values()]
        if name is not None:
            return self.finish(next(c for c in cards if c["id"] == name))
        self.finish({"object": "list", "data": cards})


class NotFound(Base):
    def get(self) -> None:
        self.fail(404, f"no such endpoint: {self.request.path}")

    post = get


class Tokenize(Base):
    async def post(self) -> None:
        async def work():
            text = self.body().get("prompt")
            if not isinstance(text, str):
                raise VllamaError(f"the prompt must be text, not {type(text).__name__}")
            eng = live_engine(self.sharing)
            if eng is None:
                raise VllamaError(UNSHARED)
            ids = await self.blocking(eng.tokenize, text)
            self.finish({"tokens": ids, "count": len(ids)})
        await self.answer(work)


class Embeddings(Base):
    async def post(self) -> None:
        async def work():
            body = self.body()
            extra = sorted(set(body) - EMBEDDING_FIELDS)
            if extra:
                raise VllamaError(f"unknown request field {extra[0]!r}: the shared vllama engine cannot honour it, "
                                  "leave it out")
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise VllamaError(f"encoding_format must be 'float' or 'base64' (got {fmt!r})")
            m = await self.blocking(self._embed, body.get("input"))
            dims = body.get("dimensions")
            if dims is not None and dims != m.shape[1]:
                raise VllamaError(f"dimensions={dims!r} cannot be honoured: this model's embeddings have "
                                  f"{m.shape[1]}; leave it out")
            rows = [base64.b64encode(row.astype("<f4").tobytes()).decode() if fmt == "base64" else row.tolist()
                    for row in m]
            self.finish({"object": "list", "model": self.sharing.seam.model, "data": [
                {"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)],
                "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        await self.answer(work)

    def _embed(self, texts):
        lease = self.sharing.seam.lease(SHARED_WAIT_S)
        try:
            return lease.engine.embed(texts)
        finally:
            lease.release()


class Generate(Base):
    chat = False

    async def post(self) -> None:
        await self.answer(self._generate)

    async def _generate(self) -> None:
        body = self.body()
        plan = Plan(body, self.chat, adapters_of(live_engine(self.sharing)))
        lease = await self.blocking(self.sharing.seam.lease, SHARED_WAIT_S)
        try:
            if self.sharing.stopped:
                raise VllamaError(UNSHARED)
            if body.get("stream"):
                await self._sse(plan, lease.engine)
            else:
                await self._whole(plan, lease.engine)
        finally:
            lease.release()

    async def _choices(self, plan: Plan, eng, each) -> None:
        """Run each(index, stream) for every choice: at once on a concurrent engine, else in turn."""
        async def one(i: int) -> None:
            stream = await self.blocking(plan.open, eng, i)
            try:
                await each(i, stream)
            finally:
                await self.blocking(stream.close)
        if eng.capabilities().concurrent:   # every choice at once: the engine batches them
            ends = await asyncio.gather(*(one(i) for i in range(plan.count)), return_exceptions=True)
            failed = next((e for e in ends if isinstance(e, BaseException)), None)
            if failed is not None:
                raise failed
        else:
            for i in range(plan.count):
                await one(i)

    async def _whole(self, plan: Plan, eng) -> None:
        results: dict = {}

        async def each(i, stream):
            await self.blocking(drain, stream, self.stopped)
            results[i] = stream.result
        await self._choices(plan, eng, each)
        done = [results[i] for i in range(plan.count)]
        self.finish({"id": plan.id, "object": plan.kind, "created": plan.created, "model": self.sharing.seam.model,
                     "choices": [plan.whole_choice(i, r) for i, r in enumerate(done)],
                     "usage": usage(done[0].prompt_tokens if done else 0, sum(r.output_tokens for r in done))})

    async def _sse(self, plan: Plan, eng) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        stream_of = getattr(self.request.connection, "stream", None)
        if stream_of is not None:
            stream_of.set_nodelay(True)   # one small write per token: send each at once
        outputs: dict = {}

        async def each(i, stream):
            first = True
            while True:
                held, done = await self.blocking(next_deltas, stream, self.stopped)
                if held or done:
                    await self._event(plan.chunk(i, stream, held, done, first))
                    first = False
                if done:
                    outputs[i] = stream
                    return
        try:
            await self._choices(plan, eng, each)
            if plan.include_usage:
                got = [outputs[i] for i in range(plan.count)]
                await self._event({"id": plan.id, "object": plan.kind, "created": plan.created,
                                   "model": self.sharing.seam.model, "choices": [],
                                   "usage": usage(got[0].prompt_tokens, sum(s.output_tokens for s in got))})
            self.write(b"data: [DONE]\n\n")
            self.finish()
        except VllamaError as e:
            if self._headers_written:
                await self._event({"error": {"message": str(e), "type": "server_error", "code": 500}})
                self.finish()
            else:
                raise
        except StreamClosedError:
            pass   # the client went away: its streams were closed, which frees the engine

    async def _event(self, data: dict) -> None:
        self.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        await self.flush()


class Completions(Generate):
    chat = False


class ChatCompletions(Generate):
    chat = True


def next_deltas(stream, stopped) -> tuple[list, bool]:
    """The next deltas of `stream`: at least one, and more while they come within GROUP_S (on a
    busy machine one event per token costs the engine more than the tokens); done at its end."""
    held, since = [], time.perf_counter()
    with _unshared(stopped):
        for d in stream:
            if stopped():
                raise VllamaError(UNSHARED)
            held.append(d)
            if d.finish_reason:
                return held, True
            if time.perf_counter() - since >= GROUP_S:
                return held, False
    return held, True


def drain(stream, stopped) -> None:
    with _unshared(stopped):
        for _ in stream:
            if stopped():
                raise VllamaError(UNSHARED)


@contextmanager
def _unshared(stopped):
    """An engine error that comes because the owner unloaded or reloaded it says so."""
    try:
        yield
    except VllamaError:
        if stopped():
            raise VllamaError(UNSHARED) from None
        raise
