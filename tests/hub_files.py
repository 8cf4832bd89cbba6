"""A file server on 127.0.0.1 that answers the two Hub endpoints huggingface_hub's downloads use
(the repo's file tree, and each file's resolve URL with HEAD, GET and HTTP ranges), so the real
library fetches from it as it would from the Hub (HF_ENDPOINT). No machine here reaches the Hub.

Repos are folders: root/ORG/NAME/files. `rate` (bytes/s) slows the file bodies so a test can
interrupt a download; `requests` records each (method, path, Range header), `streamed` the bytes of file bodies sent."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


class HubFiles:
    def __init__(self, root: Path):
        self.root = root
        self.rate: float | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self.streamed = 0   # bytes of file bodies sent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                outer.answer(self, body=False)

            def do_GET(self):
                outer.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sent(self, path_end: str) -> int:
        """Bytes asked for by GETs of files whose path ends so (a GET without a range: the whole file)."""
        total = 0
        for method, path, rng in self.requests:
            if method == "GET" and path.endswith(path_end):
                size = self._file_of(path).stat().st_size
                lo, hi = _span(rng, size)
                total += hi - lo
        return total

    def _file_of(self, path: str) -> Path:
        m = re.match(r"^/([^/]+)/([^/]+)/resolve/[^/]+/(.+)$", path)
        return self.root / m[1] / m[2] / m[3]

    def answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        rng = h.headers.get("Range")
        self.requests.append((h.command, path, rng))
        tree = re.match(r"^/api/models/([^/]+)/([^/]+)/tree/[^/]+$", path)
        if tree:
            repo = self.root / tree[1] / tree[2]
            if not repo.is_dir():
                return _error(h, 404, "RepoNotFound")
            listing = [{"type": "file", "path": p.relative_to(repo).as_posix(), "size": p.stat().st_size,
                        "oid": _sha(p)[:40]} for p in sorted(repo.rglob("*")) if p.is_file()]
            return _send(h, 200, {"Content-Type": "application/json"}, json.dumps(listing).encode(), body)
        if not re.match(r"^/[^/]+/[^/]+/resolve/", path):
            return _error(h, 404, "EntryNotFound")
        f = self._file_of(path)
        if not f.parent.exists() or not (self.root / path.split("/")[1] / path.split("/")[2]).is_dir():
            return _error(h, 404, "RepoNotFound")
        if not f.is_file():
            return _error(h, 404, "EntryNotFound")
        size = f.stat().st_size
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_sha(f)}"', "Accept-Ranges": "bytes"}
        lo, hi = _span(rng, size)
        if rng:
            headers["Content-Range"] = f"bytes {lo}-{hi - 1}/{size}"
        headers["Content-Length"] = str(hi - lo)
        h.send_response(206 if rng else 200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if not body:
            return
        with open(f, "rb") as src:
            src.seek(lo)
            left = hi - lo
            try:
                while left:
                    chunk = src.read(min(left, 64 << 10))
                    h.wfile.write(chunk)
                    left -= len(chunk)
                    self.streamed += len(chunk)
                    if self.rate:
                        time.sleep(len(chunk) / self.rate)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the client stopped reading: an interrupted download


def _span(rng: str | None, size: int) -> tuple[int, int]:
    if not rng:
        return 0, size
    m = re.match(r"bytes=(\d+)-(\d*)$", rng)
    return int(m[1]), min(size, int(m[2]) + 1) if m[2] else size


def _sha(p: Path, _known: dict = {}) -> str:
    key = (p, p.stat().st_mtime_ns)
    if key not in _known:
        _known[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _known[key]


def _error(h, status: int, code: str) -> None:
    _send(h, status, {"X-Error-Code": code, "Content-Type": "application/json"},
          json.dumps({"error": code}).encode(), True)


def _send(h, status: int, headers: dict, data: bytes, body: bool) -> None:
    h.send_response(status)
    for k, v in {**headers, "Content-Length": str(len(data))}.items():
        h.send_header(k, v)
    h.end_headers()
    if body:
        h.wfile.write(data)
