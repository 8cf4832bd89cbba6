"""One engine for many notebooks. `share()` serves the kernel's loaded engine to the user's other
kernels over an OpenAI-compatible HTTP API on 127.0.0.1 (a free port, a random bearer token) and
describes it in a runtime file (mode 0600) in Jupyter's runtime directory. A kernel that loads
with no model named finds a live shared engine there and connects to it (the openai engine);
the model stays in the sharing kernel's memory only. Runtime files of dead kernels are removed."""
from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import threading
import time
from pathlib import Path

from .errors import VllamaError
from .options import Option
from .seam import IDLE_TIMEOUT_S, Seam

PREFIX = "vllama-shared-"
TOKEN_ENV = "VLLAMA_SHARED_TOKEN"   # where a client kernel keeps the token of the engine it uses


def runtime_dir() -> Path:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        return Path(jupyter_runtime_dir())
    except ImportError:
        return Path.home() / ".local" / "share" / "jupyter" / "runtime"


def enabled() -> bool:
    """VLLAMA_SHARED=0 turns finding shared engines off."""
    return os.environ.get("VLLAMA_SHARED", "1").strip().lower() not in ("0", "false", "no", "off")


def _alive(pid) -> bool:
    import psutil

    if not (isinstance(pid, int) and pid > 0):
        return False
    try:   # a killed kernel its parent has not reaped yet is a zombie: gone all the same
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def live_shares() -> list[dict]:
    """Shared engines of live kernels other than this one, newest first; files of dead kernels
    are removed, unreadable ones skipped."""
    found = []
    for path in runtime_dir().glob(f"{PREFIX}*.json"):
        try:
            if hasattr(os, "getuid") and path.stat().st_uid != os.getuid():
                continue   # only this user's own engines
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("url", "token", "model", "engine")):
            continue
        if not _alive(info.get("pid")):
            path.unlink(missing_ok=True)   # its kernel died without cleaning up
            continue
        if info["pid"] != os.getpid():
            found.append({**info, "file": str(path)})
    return sorted(found, key=lambda i: -float(i.get("started") or 0))


def still_shared(info_file: str, pid: int) -> str | None:
    """Why a client can no longer use the shared engine of `pid`, or None while it can."""
    if not _alive(pid) or not Path(info_file).exists():
        return (f"the shared engine of another notebook (pid {pid}) has stopped: this kernel lets go of it, and "
                "its next request loads a model here")
    return None


class Sharing:
    """The owner's side: the HTTP server over the session's engine and its runtime file."""

    def __init__(self, seam: Seam, idle_timeout: float = IDLE_TIMEOUT_S, port: int = 0):
        from .share_server import ShareServer

        self.seam = seam
        self.token = secrets.token_urlsafe(24)
        self.idle_timeout = idle_timeout
        self.clients: dict[int, float] = {}   # pid -> last request time
        self.last_request = time.monotonic()
        self.server = ShareServer(self, port)
        self.url = f"http://127.0.0.1:{self.server.port}/v1"
        self.file = runtime_dir() / f"{PREFIX}{os.getpid()}.json"
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> "Sharing":
        self._write({"url": self.url, "token": self.token, "engine": self.seam.engine_name, "model": self.seam.model,
                     "pid": os.getpid(), "started": time.time()})
        self.server.start()
        self._watcher = threading.Thread(target=self._watch, name="vllama-share-idle", daemon=True)
        self._watcher.start()
        return self

    def _write(self, info: dict) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.unlink(missing_ok=True)
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # the token is a secret
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)

    def seen(self, client: str | None) -> None:
        self.last_request = time.monotonic()
        if client and client.isdigit():
            new = int(client) not in self.clients
            self.clients[int(client)] = time.time()
            if new:
                self.seam.changed()   # the panel and status bar show the count

    def client_count(self) -> int:
        """Other kernels that used the engine and are still running."""
        return sum(1 for pid in list(self.clients) if _alive(pid))

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            if time.monotonic() - self.last_request > self.idle_timeout and not self.seam.busy:
                from .errors import notice

                notice(f"stopped sharing the engine: no request for {self.idle_timeout:.0f} s")
                self.seam.stop()
                return

    def stop(self) -> None:
        # the file goes first: a client told "stopped" must find it gone, and let go of the engine
        self.file.unlink(missing_ok=True)
        self._stop.set()
        self.server.stop()

    @property
    def stopped(self) -> bool:
        """Set by stop(): requests still streaming end at their next token."""
        return self._stop.is_set()

    def describe(self) -> dict:
        return {"url": self.url, "file": str(self.file), "clients": self.client_count(),
                "idle_timeout_s": self.idle_timeout}

    def how_to_use(self) -> str:
        """Copy-paste lines for a script or tool on this machine (the token itself stays in the file)."""
        read = f"json.load(open({str(self.file)!r}))['token']"
        token = f"$({shlex.quote(sys.executable)} -c \"import json; print({read})\")"
        return (f"from a script:  import json, openai; client = openai.OpenAI(base_url={self.url!r}, "
                f"api_key={read})\n"
                f"other tools:    export OPENAI_BASE_URL={self.url} OPENAI_API_KEY={token}\n"
                f"                (Codex, the OpenAI Agents SDK, LangChain: /v1/responses, /v1/chat/completions)\n"
                f"Claude Code:    export ANTHROPIC_BASE_URL={self.url.removesuffix('/v1')} "
                f"ANTHROPIC_AUTH_TOKEN={token} ANTHROPIC_MODEL={shlex.quote(self.seam.model)}")


def connect_options(info: dict) -> dict:
    """The openai engine's options for a shared engine; its token goes in this process's environment."""
    os.environ[TOKEN_ENV] = info["token"]
    return {"url": info["url"], "preset": "vllama", "api_key_env": TOKEN_ENV, "shared_by": info["pid"],
            "shared_file": info["file"]}


IDLE = Option("idle_timeout", "float", IDLE_TIMEOUT_S, "seconds without a request before the share stops",
              low=0, low_open=True)
PORT = Option("port", "int", None, "a port on 127.0.0.1 a user may bind, or leave it out for a free one",
              low=1024, high=65535, optional=True)


def check_idle_timeout(value) -> float:
    return IDLE.check(value)


def check_port(value) -> int:
    """0 (a free port) for None; else a port number a user may bind."""
    return PORT.check(value) or 0


def client(own: Sharing | None = None, api: str = "openai", **kwargs):
    """A client pointed at a live shared engine: `own` (this kernel's), else the newest one of the
    user's other kernels; an `openai.OpenAI`, or with api='anthropic' an `anthropic.Anthropic`."""
    if api not in CLIENTS:
        raise VllamaError(f"api={api!r}: use 'openai' or 'anthropic'")
    try:
        package = __import__(api)
    except ImportError:
        raise VllamaError(f"the {api} package is not installed: pip install {api}") from None
    if own is not None:
        url, token = own.url, own.token
    else:
        found = live_shares() if enabled() else []
        if not found:
            raise VllamaError("no shared engine is running: %vllama share in the notebook that has the model loaded")
        url, token = found[0]["url"], found[0]["token"]
    if api == "anthropic":   # its client adds /v1 itself
        return package.Anthropic(base_url=url.removesuffix("/v1"), api_key=token, **kwargs)
    return package.OpenAI(base_url=url, api_key=token, **kwargs)


CLIENTS = ("openai", "anthropic")
