"""A real HTTP server on 127.0.0.1 that plays a buggy or hostile OpenAI-compatible server.

The first path segment picks the behaviour: http://127.0.0.1:PORT/<mode>/v1. /models answers
normally unless the mode is about /models; completions answer in the mode's malformed way."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "hostile-model"


def sse(*chunks) -> bytes:
    return b"".join(b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n" for c in chunks)


def text(t, reason=None):
    return {"choices": [{"index": 0, "text": t, "finish_reason": reason}]}


STREAMS = {   # mode -> (status, content type, body)
    "ok": (200, "text/event-stream", sse(text("Hello"), text(" there", "length"), b"[DONE]")),
    "no-done": (200, "text/event-stream", sse(text("Hello"), text(" there"))),
    "empty-stream": (200, "text/event-stream", b""),
    "list-chunk": (200, "text/event-stream", sse([1, 2, 3], b"[DONE]")),
    "choices-int": (200, "text/event-stream", sse({"choices": 5}, b"[DONE]")),
    "choice-str": (200, "text/event-stream", sse({"choices": ["x"]}, b"[DONE]")),
    "usage-str": (200, "text/event-stream", sse(text("a"), {"choices": [], "usage": "abc"}, b"[DONE]")),
    "usage-neg": (200, "text/event-stream", sse(text("a"), {"choices": [], "usage": {"prompt_tokens": -4,
                                                                                       "completion_tokens": 1}}, b"[DONE]")),
    "text-int": (200, "text/event-stream", sse({"choices": [{"text": 5}]}, b"[DONE]")),
    "ids-bad": (200, "text/event-stream", sse({"choices": [{"text": "a", "token_ids": ["x"]}]}, b"[DONE]")),
    "finish-int": (200, "text/event-stream", sse({"choices": [{"text": "a", "finish_reason": 5}]}, b"[DONE]")),
    "not-json": (200, "text/event-stream", sse(b"{this is not json", b"[DONE]")),
    "random-bytes": (200, "text/event-stream", bytes(range(256)) * 8),
    "mid-error": (200, "text/event-stream", sse(text("a"), {"error": {"message": "out of memory"}})),
    "not-sse": (200, "application/json", b'{"choices": [{"text": "whole"}]}'),
    "html-500": (500, "text/html", b"<html><body>Internal Server Error</body></html>"),
    "echo-key-400": (400, "application/json", None),   # echoes the Authorization header
    "echo-key-503": (503, "application/json", None),
    "echo-key-long": (400, "application/json", None),   # the key where a 200-character cut falls
}
def with_logprobs(t, logprobs, reason=None):
    return {"choices": [{"index": 0, "text": t, "finish_reason": reason, "logprobs": logprobs}]}


LOGPROB_STREAMS = {   # mode -> completions stream for a request that asked for logprobs
    "lp-str": sse(with_logprobs("a", "x"), b"[DONE]"),
    "lp-positive": sse(with_logprobs("a", {"tokens": ["a"], "token_logprobs": [5.0], "top_logprobs": [{"a": 5.0}]}),
                       b"[DONE]"),
    "lp-len": sse(with_logprobs("a", {"tokens": ["a", "b"], "token_logprobs": [-1.0]}), b"[DONE]"),
    "lp-top-list": sse(with_logprobs("a", {"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [[1]]}),
                       b"[DONE]"),
}
STREAMS.update({m: (200, "text/event-stream", body) for m, body in LOGPROB_STREAMS.items()})
TOKENIZE = {   # mode -> /tokenize body (other modes: 404, no such endpoint)
    "tok-garbage": b'{"tokens": "abc"}',
    "tok-html": b"<html>tokens</html>",
}
EMBEDDINGS = {   # mode -> /v1/embeddings body (other modes: 404)
    "emb-garbage": b'{"data": [{"embedding": "x"}]}',
    "emb-nan": b'{"data": [{"embedding": [NaN, 1.0]}]}',
    "emb-none": b'{"data": []}',
}
MODELS = {   # mode -> /models body
    "models-list": b"[]",
    "models-null": b"null",
    "models-empty": b'{"data": []}',
    "models-html": b"<html>hello</html>",
    "models-data-str": b'{"data": "everything"}',
}
CHAT = {   # mode -> chat stream
    "delta-list": sse({"choices": [{"delta": [1]}]}, b"[DONE]"),
    "delta-content-int": sse({"choices": [{"delta": {"content": 7}}]}, b"[DONE]"),
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _mode(self) -> str:
        return self.path.strip("/").split("/")[0]

    def do_GET(self):
        mode = self._mode()
        if self.path.endswith("/models"):
            body = MODELS.get(mode, json.dumps({"data": [{"id": MODEL}]}).encode())
            return self._send(200, "application/json", body)
        self._send(404, "application/json", b'{"error": "not found"}')

    def do_POST(self):
        mode = self._mode()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("tokenize") or self.path.endswith("/embeddings"):
            table = EMBEDDINGS if self.path.endswith("/embeddings") else TOKENIZE
            if mode in table:
                return self._send(200, "application/json", table[mode])
            return self._send(404, "application/json", b'{"error": {"message": "Not Found"}}')
        if mode in CHAT:
            return self._send(200, "text/event-stream", CHAT[mode])
        if mode.startswith("echo-cut-"):   # the echo cut at a given length, as a server's own truncation would
            echo = f"you sent {self.headers.get('Authorization')} with it".encode()
            return self._send(400, "text/plain", echo[:int(mode.removeprefix("echo-cut-"))])
        status, ctype, body = STREAMS.get(mode, STREAMS["ok"])
        if body is None:
            pad = "x" * 160 if mode.endswith("long") else ""
            body = json.dumps({"error": {"message": f"bad request; {pad}you sent {self.headers.get('Authorization')}"}}).encode()
        self._send(status, ctype, body)


class HostileServer:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/v1"

    def __enter__(self) -> "HostileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # for trying it by hand
    with HostileServer() as s:
        print(s.url("ok"))
        threading.Event().wait(float(os.environ.get("SECONDS", "3600")))
