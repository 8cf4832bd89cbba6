"""The shared engine's agent endpoints: OpenAI's Responses API (/v1/responses) and Anthropic's
Messages API (/v1/messages, count_tokens). A request is made a chat body (share_responses,
share_messages) and runs as a chat completion does; the reply is written whole or as the API's
events."""
from __future__ import annotations

import hmac
import json

from tornado.iostream import StreamClosedError

from .errors import VllamaError
from .seam import SHARED_WAIT_S, UNSHARED
from . import share_messages, share_responses
from .sampling import Sampling
from .share_handlers import Generate, drain, live_engine, next_deltas
from .share_wire import Plan, adapters_of


class AgentAPI(Generate):
    """/v1/responses and /v1/messages: the request is made a chat body (api.to_chat) and read by the
    same Plan; api.Reply writes the answer whole or as the API's events."""
    api = share_responses

    def plan(self, body: dict) -> Plan:
        eng = live_engine(self.sharing)
        chat, overrides = self.api.to_chat(body, eng.capabilities() if eng is not None else None)
        if chat.get("n") not in (None, 1):
            raise VllamaError(f"n={chat['n']!r}: this API gives one answer a request; send n requests")
        plan = Plan({**chat, "model": body.get("model")}, True, adapters_of(eng))
        if overrides:
            plan.sampling = Sampling.make(plan.sampling, **overrides)
        return plan

    async def _generate(self) -> None:
        body = self.body()
        plan = self.plan(body)
        lease = await self.blocking(self.sharing.seam.lease, SHARED_WAIT_S)
        try:
            if self.sharing.stopped:
                raise VllamaError(UNSHARED)
            reply = self.api.Reply(body, self.sharing.seam.model)
            stream = await self.blocking(plan.open, lease.engine, 0)
            try:
                if body.get("stream"):
                    await self._events(stream, reply)
                else:
                    await self.blocking(drain, stream, self.stopped)
                    self.finish(reply.whole(stream.result))
            finally:
                await self.blocking(stream.close)
        finally:
            lease.release()

    async def _events(self, stream, reply) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        stream_of = getattr(self.request.connection, "stream", None)
        if stream_of is not None:
            stream_of.set_nodelay(True)
        try:
            await self._send(reply.start())
            while True:
                held, done = await self.blocking(next_deltas, stream, self.stopped)
                await self._send(reply.feed(held))
                if done:
                    await self._send(reply.end(stream.result))
                    self.finish()
                    return
        except VllamaError as e:
            if not self._headers_written:
                raise
            await self._send([("error", self.error_body(500, str(e)))])
            self.finish()
        except StreamClosedError:
            pass

    async def _send(self, events: list) -> None:
        if events:
            self.write(b"".join(b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"
                                for kind, data in events))
            await self.flush()

    @staticmethod
    def error_body(status: int, message: str) -> dict:
        return {"type": "error", "code": status, "message": message, "param": None, "sequence_number": 0}


class Responses(AgentAPI):
    api = share_responses


class Messages(AgentAPI):
    """Anthropic's shape: the key as x-api-key (or a bearer token), errors as {type: error, error: {...}}."""
    api = share_messages

    def prepare(self) -> None:
        key = self.request.headers.get("x-api-key")
        if key is not None and hmac.compare_digest(key.encode(), self.sharing.token.encode()):
            self.request.headers["Authorization"] = f"Bearer {self.sharing.token}"
        super().prepare()

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(share_messages.error(status, message))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish(share_messages.error(status_code, self._reason))

    @staticmethod
    def error_body(status: int, message: str) -> dict:
        return share_messages.error(status, message)


class CountTokens(Messages):
    async def _generate(self) -> None:
        plan = self.plan(share_messages.count_body(self.body()))
        lease = await self.blocking(self.sharing.seam.lease, SHARED_WAIT_S)
        try:
            if self.sharing.stopped:
                raise VllamaError(UNSHARED)
            n = await self.blocking(_prompt_tokens, lease.engine, plan)
        finally:
            lease.release()
        self.finish({"input_tokens": n})


def _prompt_tokens(eng, plan: Plan) -> int:
    """The tokens of the prompt a chat request would make (its tools and thinking switch included)."""
    if not plan.tools and plan.sampling.think is None:
        return eng.prompt_tokens(plan.messages)
    return len(eng.tokenize(eng.chat_prompt(plan.messages, plan.tools, plan.sampling.think), special=True))
