"""Local OpenAI-compatible servers started for comparison (llama.cpp server, `vllm serve`, MAX):
bound to 127.0.0.1 on a free port, probed until ready, owned by the session and stopped on
unload or when the kernel exits, even when it is killed (Linux: a parent-death signal). Their
logs live in one folder per kernel, removed when the server stops."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import models
from .errors import VllamaError

KINDS = ("llamacpp", "vllm", "max")
PRESETS = {"llamacpp": "llamacpp-server", "vllm": "vllm", "max": "max"}   # the openai engine's preset for each
START_S = {"max": 900.0}   # MAX compiles the model at its first start: minutes on a CPU


PORT_TRIES = 3


class PortTaken(Exception):
    """The port free_port() gave was bound by another process before the server bound it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LOGS: Path | None = None
_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d\.\d+ [A-Z]+: ")


def log_folder() -> Path:
    """This kernel's folder for server logs. Folders left by kernels that died are removed first."""
    global _LOGS
    import psutil

    for old in Path(tempfile.gettempdir()).glob("vllama-logs-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    if _LOGS is None or not _LOGS.exists():
        _LOGS = Path(tempfile.mkdtemp(prefix=f"vllama-logs-{os.getpid()}-"))
    return _LOGS


def remove_log_folder() -> None:
    if _LOGS is not None:
        shutil.rmtree(_LOGS, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the kernel that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setsid()


class Server:
    """A server process this session started."""

    def __init__(self, kind: str, cmd: list[str], port: int, model: str, env: dict | None = None,
                 device: str | None = None):
        self.kind, self.cmd, self.port, self.model = kind, cmd, port, model
        self.device = device   # where the server runs, when we chose it (MAX: cpu or gpu)
        self.log_path = log_folder() / f"{kind}-{port}.log"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.picked = False   # the port is one free_port() gave, not the user's: another may be tried

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def preset(self) -> str:
        return PRESETS[self.kind]

    def start(self, timeout: float | None = None) -> "Server":
        """Start it and wait until it serves its model. A port we picked that another process
        bound before the server did is picked again (a few times) rather than failing."""
        for _ in range(PORT_TRIES - 1):
            try:
                return self._start(timeout)
            except PortTaken:
                self._move(free_port())
        return self._start(timeout)

    def _move(self, port: int) -> None:
        i = self.cmd.index("--port")
        self.cmd[i + 1], self.port = str(port), port
        self.log_path = log_folder() / f"{self.kind}-{port}.log"

    def _start(self, timeout: float | None) -> "Server":
        import httpx

        timeout = timeout or START_S.get(self.kind, 300.0)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **self.env}, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        headers = {}
        key = self.env.get("API_KEY") or self.env.get("VLLM_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail(1)
                taken = "address already in use" in self.log_tail(40).lower()
                self.stop()
                if taken and self.picked:
                    raise PortTaken(self.port)
                if taken:
                    raise VllamaError(f"the {self.kind} server could not listen on port {self.port}: another process "
                                      "does; choose another port, or leave it out for a free one")
                raise VllamaError(f"the {self.kind} server exited with code {self.proc.returncode} while starting: {tail}")
            try:
                if self._serves(httpx.get(f"{self.url}/models", headers=headers, timeout=2.0)):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tail = self.log_tail(1)
        self.stop()
        raise VllamaError(f"the {self.kind} server was not ready within {timeout:.0f}s: {tail or 'it wrote nothing'}")

    def _serves(self, r) -> bool:
        """Ready: the answer lists the model this server was started with (not merely any 200 on
        the port, which another server could give)."""
        try:
            body = r.json() if r.status_code == 200 else None
        except ValueError:
            return False
        data = body.get("data") if isinstance(body, dict) else None
        return isinstance(data, list) and any(isinstance(m, dict) and m.get("id") == self.model for m in data)

    def log_tail(self, lines: int = 20) -> str:
        """The log's last lines, without the time and level that MAX puts before each."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(_LOG_PREFIX.sub("", line) for line in text[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server and its process group, and remove its log."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
        finally:
            self.log_path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{self.kind} server {self.model!r} at {self.url} ({state})>"


def make(kind: str, model: str | None = None, port: int | None = None, api_key_env: str | None = None,
         n_ctx: int | None = None, extra_args: list[str] | None = None) -> Server:
    """A server (not yet started) for `model` (default: the embedded one)."""
    if kind not in KINDS:
        raise VllamaError(f"unknown server kind {kind!r}: use {', '.join(KINDS)}")
    picked, port = port is None, port or free_port()
    env = {}
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise VllamaError(f"the environment variable {api_key_env} (api_key_env) is not set: export it first")
    if kind == "max":
        server = _max(model, port, key, n_ctx, extra_args)
        server.picked = picked
        return server
    if kind == "llamacpp":
        ref = models.resolve(model, "llamacpp")
        n_ctx = n_ctx or (1024 if ref.source == "embedded" else 4096)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(ref.path), "--model_alias", ref.name,
               "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", "False", "--n_ctx", str(n_ctx),
               "--flash_attn", "True"]   # as the in-process engine on the CPU: the same numbers
        from .engines.vision import find_projector

        mmproj = find_projector(ref.path, None)
        if mmproj is not None:   # the server's multimodal handler, with the model's projector
            cmd += ["--chat_format", "mtmd", "--clip_model_path", str(mmproj)]
        if key:
            env["API_KEY"] = key  # read by the server's settings; kept off the command line
    else:
        ref = models.resolve(model, "vllm")
        cmd = _vllm_serve_command() + [str(ref.path), "--served-model-name", ref.name, "--host", "127.0.0.1", "--port", str(port), "--disable-log-stats",
               "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
        if ref.source == "embedded":
            cmd += ["--dtype", "float32"]
        if n_ctx:
            cmd += ["--max-model-len", str(n_ctx)]
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if key:
            env["VLLM_API_KEY"] = key
    server = Server(kind, cmd + list(extra_args or []), port, ref.name, env)
    server.context_length = n_ctx   # llama-cpp-python's server does not list it; vLLM's does
    server.picked = picked
    return server


def _max(model: str | None, port: int, key: str | None, n_ctx: int | None, extra_args: list[str] | None) -> Server:
    from . import max_server

    if key:
        raise VllamaError("MAX's server takes no API key (it listens on 127.0.0.1 only): drop api_key_env")
    ref = models.resolve(model, "vllm")   # a Hugging Face folder or repo, as for vLLM
    where = max_server.device()
    folder = max_server.model_folder(ref, where)
    cmd = max_server.serve_command(folder, ref.name, port, where, n_ctx)
    server = Server("max", cmd + list(extra_args or []), port, ref.name, dict(max_server.ENV), device=where)
    server.context_length = n_ctx   # else the engine reads max_model_len from /models
    return server


def _vllm_serve_command() -> list[str]:
    """`vllm serve`; the CPU build (distribution vllm-cpu) breaks that CLI's version lookup, so
    there the same OpenAI server runs through its module entry point."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
        return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve"]
    except PackageNotFoundError:
        return [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "vllm.entrypoints.openai.api_server", "--model"]
