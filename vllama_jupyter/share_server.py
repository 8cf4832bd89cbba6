"""The HTTP side of a shared engine: the OpenAI API (models, completions, chat completions with
SSE streaming, responses, embeddings, tokenize, health) and Anthropic's Messages API over the
session's engine, on 127.0.0.1, answering only requests that carry the token; the bodies are read
and written by share_wire (share_responses and share_messages turn theirs into its chat body). Built
on tornado (every kernel has it): its event loop runs in a thread of its own, and the engine's
blocking calls run in a thread pool beside it, so idle connections cost no thread. A request
takes the engine through the session's seam (seam.Seam.lease): at once on vLLM and on llama.cpp
(which decodes them together), in turn on an engine that takes one at a time."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import tornado.httpserver
import tornado.netutil
import tornado.web

from .errors import VllamaError
from .seam import SHARING_END_S
from .share_agents import CountTokens, Messages, Responses
from .share_handlers import ChatCompletions, Completions, Embeddings, Health, Models, NotFound, Tokenize

WORKERS = 64      # requests that may be in the engine (or waiting for it) at once


class ShareServer:
    """tornado on 127.0.0.1:`port` (0: a free one) in a thread of its own."""

    def __init__(self, sharing, port: int = 0):
        self.sharing = sharing
        try:
            self.sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
        except OSError as e:
            raise VllamaError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}): choose another port, "
                              "or leave it out for a free one") from None
        self.port = self.sockets[0].getsockname()[1]
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="vllama-share")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.active = 0   # requests being answered (read and written in the loop's thread)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllama-share", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        args = {"server": self}
        app = tornado.web.Application([
            (r"/health/?", Health, args), (r"/v1/models/?", Models, args), (r"/v1/models/(.+)", Models, args),
            (r"/v1/completions/?", Completions, args), (r"/v1/chat/completions/?", ChatCompletions, args),
            (r"/v1/responses/?", Responses, args), (r"/v1/messages/?", Messages, args),
            (r"/v1/messages/count_tokens/?", CountTokens, args),
            (r"/v1/embeddings/?", Embeddings, args), (r"/(?:v1/)?tokenize/?", Tokenize, args),
            (r".*", NotFound, args)], log_function=lambda handler: None)
        self.http = tornado.httpserver.HTTPServer(app, idle_connection_timeout=3600, body_timeout=60)
        self.http.add_sockets(self.sockets)
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Close the socket and every connection; requests still running end at their next token."""
        if self.loop is None or self.loop.is_closed():
            return

        async def down() -> None:
            self.http.stop()   # no new connections; requests running end at their next token
            deadline = time.monotonic() + SHARING_END_S
            while self.active and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.wait_for(self.http.close_all_connections(), 5)

        try:
            asyncio.run_coroutine_threadsafe(down(), self.loop).result(SHARING_END_S + 10)
        except Exception:
            pass   # connections that would not close die with the loop
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)
