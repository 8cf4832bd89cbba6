"""The HTTP side of a shared engine: an OpenAI-compatible API (models, completions, chat
completions with SSE streaming, tokenize, embeddings) over the session's engine, on 127.0.0.1,
answering only requests that carry the bearer token. Requests on an engine that runs one at a
time wait for it (the session's lock); vLLM takes them concurrently."""
from __future__ import annotations

import hmac
import json
import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import VllamaError
from .options import from_openai
from .sampling import Sampling
from .session import SHARED_WAIT_S

GROUP_S = 0.005  # the least time between two streamed events
UNSHARED = "the notebook that shares this engine unloaded or reloaded it: this request was stopped"


def make_server(sharing) -> ThreadingHTTPServer:
    handler = type("ShareHandler", (Handler,), {"sharing": sharing})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    return httpd


def sampling_of(body: dict, chat: bool) -> Sampling:
    """OpenAI request fields -> Sampling (one clear error for bad values), by options.from_openai."""
    return Sampling.make(**from_openai(body, chat))


class Handler(BaseHTTPRequestHandler):
    sharing = None   # set by make_server
    server_version = "vllama-shared"
    protocol_version = "HTTP/1.1"   # keep-alive: a client's requests reuse one connection

    def setup(self) -> None:
        super().setup()
        # one small write per token: send each at once, not after the last one is acknowledged
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _json(self, status: int, data) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "code": status}})

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.sharing.token}".encode()):
            self.sharing.seen(self.headers.get("X-Vllama-Client"))
            return True
        self._error(401, "a bearer token is required: it is in the shared engine's runtime file")
        return False

    def _body(self) -> dict | None:
        try:
            data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._error(400, "the request body must be a JSON object")
            return None
        return data

    # -- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/v1/models":
            session = self.sharing.session
            model = {"id": session.loaded.ref.name, "object": "model", "owned_by": "vllama-jupyter"}
            try:
                model["max_model_len"] = session.engine.context_length()
            except (VllamaError, AttributeError):
                pass
            return self._json(200, {"object": "list", "data": [model]})
        self._error(404, f"no such endpoint: {self.path}")

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = self._body()
        if body is None:
            return
        path = self.path.rstrip("/")
        try:
            if path in ("/v1/completions", "/v1/chat/completions"):
                return self._generate(body, chat=path.endswith("chat/completions"))
            if path == "/tokenize":
                ids = self._engine().tokenize(_text(body.get("prompt")))
                return self._json(200, {"tokens": ids, "count": len(ids)})
            if path == "/v1/embeddings":
                texts = body.get("input")
                m = self._run(lambda eng: eng.embed(texts))
                return self._json(200, {"object": "list", "data": [
                    {"object": "embedding", "index": i, "embedding": row.tolist()} for i, row in enumerate(m)]})
        except VllamaError as e:
            return self._error(400, str(e))
        self._error(404, f"no such endpoint: {self.path}")

    # -- engine ---------------------------------------------------------------------------
    def _engine(self):
        eng = self.sharing.session.engine
        if eng is None:
            raise VllamaError("the shared engine has been unloaded")
        return eng

    def _run(self, fn):
        """Run fn(engine) holding the session's lock when the engine takes one request at a time."""
        eng = self._engine()
        if eng.concurrent:
            return fn(eng)
        with self.sharing.session.hold("serving", wait=SHARED_WAIT_S):
            return fn(eng)

    def _generate(self, body: dict, chat: bool) -> None:
        refuse_unsupported(body)
        s = sampling_of(body, chat)
        eng = self._engine()
        if chat:
            messages, tools = body.get("messages"), body.get("tools")
            if tools is not None and (not isinstance(tools, list) or not all(
                    isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") for t in tools)):
                raise VllamaError("tools must be a list of {'type': 'function', 'function': {'name': ..., 'parameters': ...}}")
            stream = eng.chat(messages if isinstance(messages, list) else [], s, tools or None)
        else:
            stream = eng.stream(body.get("prompt") if isinstance(body.get("prompt"), list) else _text(body.get("prompt")), s)
        session = self.sharing.session
        if not eng.concurrent:
            stream.on(start=lambda: session.acquire("serving", wait=SHARED_WAIT_S), end=lambda _st: session.release())
        if body.get("stream"):
            return self._sse(stream, chat)
        for _ in stream:
            if self.sharing.stopped:
                stream.close()
                raise VllamaError(UNSHARED)
        result = stream.result
        choice = {"index": 0, "finish_reason": _reason(result.finish_reason), "token_ids": result.token_ids}
        if chat:
            choice["message"] = {"role": "assistant", "content": result.text}
            if result.reasoning:
                choice["message"]["reasoning_content"] = result.reasoning
            if result.tool_calls:
                choice["message"]["tool_calls"] = result.tool_calls
                choice["finish_reason"] = "tool_calls"
        else:
            choice["text"] = result.text
        if result.logprobs is not None:
            choice["logprobs"] = _logprobs(result.logprobs, chat)
        self._json(200, {"id": f"cmpl-{uuid.uuid4().hex}", "object": "chat.completion" if chat else "text_completion",
                         "created": int(time.time()), "model": result.model, "choices": [choice],
                         "usage": _usage(result.prompt_tokens, result.output_tokens)})

    def _sse(self, stream, chat: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")   # the stream ends when the connection does
        self.close_connection = True
        self.end_headers()
        rid, kind = f"cmpl-{uuid.uuid4().hex}", "chat.completion.chunk" if chat else "text_completion"
        held: list = []   # deltas not sent yet
        sent = 0.0
        first = [True]

        def send(reason=None) -> None:
            if reason and chat and stream.tool_calls:
                reason = "tool_calls"
            choice = {"index": 0, "finish_reason": _reason(reason) if reason else None,
                      "token_ids": [t for d in held for t in d.token_ids]}
            text = "".join(d.text for d in held)
            if chat:
                delta = {"content": text}
                thought = "".join(d.reasoning for d in held)
                if thought:
                    delta["reasoning_content"] = thought
                if first[0]:
                    delta["role"] = "assistant"
                    first[0] = False
                if reason and stream.tool_calls:
                    delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(stream.tool_calls)]
                choice["delta"] = delta
            else:
                choice["text"] = text
            if held and held[0].logprobs is not None:
                choice["logprobs"] = _logprobs([t for d in held for t in d.logprobs or ()], chat)
            self._event({"id": rid, "object": kind, "model": stream.model, "choices": [choice]})
            held.clear()
        try:
            for d in stream:
                if self.sharing.stopped:
                    raise VllamaError(UNSHARED)
                held.append(d)
                # tokens that come faster than every GROUP_S go out together: on a busy machine
                # one event per token costs the engine more than the tokens themselves
                now = time.perf_counter()
                if d.finish_reason or now - sent >= GROUP_S:
                    send(d.finish_reason)
                    sent = now
            self._event({"id": rid, "object": kind, "model": stream.model, "choices": [],
                         "usage": _usage(stream.prompt_tokens, stream.output_tokens)})
            self.wfile.write(b"data: [DONE]\n\n")
        except VllamaError as e:
            self._event({"error": {"message": str(e)}})
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client went away: closing the stream below frees the engine
        finally:
            stream.close()

    def _event(self, data: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()


# OpenAI request fields this engine cannot honour, with the value that means "off"
UNSUPPORTED = {"n": 1, "best_of": 1, "frequency_penalty": 0, "presence_penalty": 0, "logit_bias": None,
               "echo": False, "suffix": None}


def refuse_unsupported(body: dict) -> None:
    """An option we cannot honour is an error, not silently ignored."""
    for key, off in UNSUPPORTED.items():
        v = body.get(key)
        if v is not None and v != off and v != {}:
            raise VllamaError(f"{key}={v!r} is not supported by the shared vllama engine: leave it out"
                              + (f" (send {v} requests, each with its own seed)" if key in ("n", "best_of") else ""))


def _text(x) -> str:
    if not isinstance(x, str):
        raise VllamaError(f"the prompt must be text, not {type(x).__name__}")
    return x


def _reason(r: str | None) -> str | None:
    return {"cancelled": "abort", "interrupted": "abort"}.get(r, r)


def _usage(prompt: int, output: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def _logprobs(items, chat: bool) -> dict:
    if chat:
        return {"content": [{"token": t.token, "logprob": t.logprob,
                             "top_logprobs": [{"token": a, "logprob": lp} for a, lp in t.top]} for t in items]}
    return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [dict(t.top) for t in items]}
