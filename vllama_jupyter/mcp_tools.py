"""MCP servers' tools beside the notebook's functions. Each server is a client session of the `mcp`
SDK (stdio: a command the kernel starts; or a streamable-HTTP URL), held on one background event
loop that lives with the kernel; a started server's process ends with the kernel (mcp_child)."""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import threading

from .errors import VllamaError
from .options import Option
from .tools import Tool, ToolOutput

TIMEOUT = Option("timeout", "float", 60.0, "seconds an MCP server may take to start or to answer one call", low=0.1)
SERVERS: dict[str, "McpServer"] = {}
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def connect(server, name: str | None = None, env: dict | None = None, timeout: float = TIMEOUT.default) -> "McpServer":
    """The running MCP server `server` (a command line, a list of words, or an http(s) URL), started
    or attached when it is not running yet. Asking again for the same server returns it."""
    spec = _spec(server)
    timeout = TIMEOUT.check(timeout)
    if importlib.util.find_spec("mcp") is None:
        raise VllamaError("MCP servers need the MCP SDK: pip install 'vllama-jupyter[mcp]'")
    if env is not None and (not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                                   for k, v in env.items())):
        raise VllamaError("env must be a dict of strings (variable name: value) for the MCP server's process")
    if name is not None and (not isinstance(name, str) or not name.strip() or any(c.isspace() or c == "," for c in name)):
        raise VllamaError(f"an MCP server's name is one word without commas, not {name!r}")
    for s in SERVERS.values():
        if s.spec == spec and s.env == env and (name is None or name == s.name) and s.alive:
            s.timeout = timeout   # the same server: the timeout asked now holds for its next calls
            return s
    if name in SERVERS and SERVERS[name].alive:
        raise VllamaError(f"an MCP server named {name!r} is already running ({SERVERS[name].where}): "
                          f"stop it first (%vllama mcp stop {name}) or give this one another name=")
    s = McpServer(spec, env, timeout)
    s.start()
    s.name = name or s.name
    if s.name in SERVERS and SERVERS[s.name].alive:
        s.stop()
        raise VllamaError(f"an MCP server named {s.name!r} is already running ({SERVERS[s.name].where}): "
                          "give this one a name= of its own")
    SERVERS[s.name] = s
    return s


def by_names(spec: str) -> list["McpServer"]:
    """--mcp a,b: the running servers of those names."""
    out = []
    for name in (x.strip() for x in spec.split(",")):
        if name not in SERVERS:
            raise VllamaError(f"no MCP server is named {name!r} (running: {', '.join(SERVERS) or 'none'}): start it with "
                              f"%vllama mcp add --name {name or 'NAME'} COMMAND, or v.mcp(...)")
        out.append(SERVERS[name])
    return out


def stop(name: str) -> None:
    if name not in SERVERS:
        raise VllamaError(f"no MCP server is named {name!r} (running: {', '.join(SERVERS) or 'none'})")
    SERVERS.pop(name).stop()


def stop_all() -> None:
    for name in list(SERVERS):
        SERVERS.pop(name).stop()


def listing() -> list[str]:
    return [repr(s) for s in SERVERS.values()]


def _spec(server) -> tuple:
    """('url', URL) or ('stdio', words...)."""
    if isinstance(server, str) and server.strip().lower().startswith(("http://", "https://")):
        return ("url", server.strip())
    if isinstance(server, str):
        try:
            words = shlex.split(server)
        except ValueError as e:
            raise VllamaError(f"could not read the MCP server's command ({e}): check the quotes") from None
    elif isinstance(server, (list, tuple)) and all(isinstance(w, str) for w in server):
        words = list(server)
    else:
        raise VllamaError("an MCP server is a command line (e.g. 'python -m mcp_server_time'), a list of its words, "
                          f"or an http(s):// URL, not {type(server).__name__}")
    if not words or not words[0].strip():
        raise VllamaError("the MCP server's command is empty: give the command that starts it, or its URL")
    if words[0] in ("python", "python3"):
        words[0] = sys.executable   # the kernel's Python, where the notebook's %pip installs servers
    return ("stdio", *words)


def _event_loop() -> asyncio.AbstractEventLoop:
    """The kernel's one loop for MCP sessions, in a daemon thread (the kernel's own loop is busy
    running cells)."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="vllama-mcp", daemon=True).start()
            atexit.register(stop_all)
        return _loop


class McpServer:
    """One MCP server's session. Pass it in tools=[...] (its tools join the notebook's functions),
    or name it with %%vllama --mcp NAME."""

    def __init__(self, spec: tuple, env: dict | None, timeout: float):
        self.spec, self.env, self.timeout = spec, env, timeout
        self.name = _default_name(spec)
        self._client = None
        self._listed: list = []
        self._built: list | None = None   # the tools, made from the listing once
        self._task: concurrent.futures.Future | None = None
        self._closing: asyncio.Event | None = None
        self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")

    @property
    def where(self) -> str:
        return self.spec[1] if self.spec[0] == "url" else shlex.join(
            ["python" if w == sys.executable else w for w in self.spec[1:]])

    @property
    def n_tools(self) -> int:
        return len(self._listed)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def __repr__(self) -> str:
        n = self.n_tools
        state = "running" if self.alive else "stopped"
        return f"MCP server {self.name}: {self.where} · {n} tool{'s' if n != 1 else ''} · {state}"

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._task = asyncio.run_coroutine_threadsafe(self._hold(ready), _event_loop())
        try:
            info, problem = ready.result(self.timeout), None
        except KeyboardInterrupt:
            self.stop()
            raise
        except concurrent.futures.TimeoutError:
            problem = (f"did not answer within {self.timeout:g} s{self._stderr(' (it wrote: {})')}: "
                       "check the command, or raise timeout=")
        except Exception as e:
            problem = f"could not be started: {self._stderr('{}') or _why(e)}"
        if problem:   # raised here, outside the except: no chain of the SDK's task groups behind the line
            self.stop()
            raise VllamaError(f"the MCP server {self.where} {problem}")
        if info is not None and getattr(info, "name", None):
            self.name = "".join(c if c.isalnum() or c in "-_." else "-" for c in info.name)

    async def _hold(self, ready: concurrent.futures.Future) -> None:
        """Open the session, list the tools, and keep the session until stop(): the SDK's
        context must be entered and left in one task."""
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client

        self._closing = asyncio.Event()
        if self.spec[0] == "url":
            target = self.spec[1]
        else:   # the server's stderr goes to a file, for the line a failure shows
            target = stdio_client(StdioServerParameters(
                command=sys.executable, args=["-m", "vllama_jupyter.mcp_child", str(os.getpid()), *self.spec[1:]],
                env=self.env), errlog=self._errlog)
        try:
            async with Client(target, read_timeout_seconds=self.timeout) as c:
                self._client = c
                self._listed = list((await c.list_tools()).tools)
                ready.set_result(c.server_info)
                await self._closing.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else RuntimeError(type(e).__name__))
            if not isinstance(e, Exception):
                raise
        finally:
            self._client = None

    def stop(self) -> None:
        """End the session (the SDK closes the server's stdin, then stops its process)."""
        loop, closing, task = _loop, self._closing, self._task
        if loop is not None and closing is not None:
            loop.call_soon_threadsafe(closing.set)
        if task is not None:
            try:
                task.result(10)
            except Exception:
                task.cancel()
        if SERVERS.get(self.name) is self:
            SERVERS.pop(self.name)

    def _stderr(self, form: str) -> str:
        """The server's last line on stderr, put in `form`; '' when it wrote none."""
        try:
            self._errlog.flush()
            self._errlog.seek(0)
            lines = [x.strip() for x in self._errlog.read().splitlines() if x.strip()]
        except (OSError, ValueError):
            return ""
        return form.format(lines[-1][:200]) if lines else ""

    # -- tools -------------------------------------------------------------------------------
    def mcp_tools(self) -> list[Tool]:
        if not self.alive:
            raise VllamaError(f"the MCP server {self.name} has stopped{self._stderr(' (it wrote: {})')}: "
                              "start it again with v.mcp(...) or %vllama mcp add")
        if self._built is None:   # once: each chat round asks again, and a validator is not free
            self._built = [self._tool(t) for t in self._listed]
        return self._built

    def _tool(self, t) -> Tool:
        import jsonschema

        params = dict(t.input_schema or {"type": "object"})
        try:
            jsonschema.validators.validator_for(params).check_schema(params)
            checker = jsonschema.validators.validator_for(params)(params)
        except jsonschema.SchemaError as e:
            raise VllamaError(f"the MCP server {self.name}'s tool {t.name} has a bad input schema ({e.message[:100]})") from None

        def check(args: dict) -> dict:
            err = jsonschema.exceptions.best_match(checker.iter_errors(args))
            if err is not None:
                where = ".".join(str(x) for x in err.absolute_path) or "arguments"
                raise VllamaError(f"{where}: {err.message[:200]}")
            return args

        desc = (t.description or "").split("\n\n")[0].strip()
        schema = {"type": "function", "function": {"name": t.name, "description": desc, "parameters": params}}
        return Tool(t.name, schema, check, lambda args: self.call(t.name, args))

    def call(self, tool: str, args: dict) -> ToolOutput:
        """Run one tool on the server; an error of the server or the tool is VllamaError's line."""
        if not self.alive or self._client is None:
            raise VllamaError(f"the MCP server {self.name} has stopped{self._stderr(' (it wrote: {})')}")
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        fut = asyncio.run_coroutine_threadsafe(self._client.call_tool(tool, args), _loop)
        try:
            result, code, why = fut.result(self.timeout + 5), None, ""
        except KeyboardInterrupt:
            fut.cancel()
            raise
        except concurrent.futures.TimeoutError:
            fut.cancel()
            result, code, why = None, REQUEST_TIMEOUT, ""
        except Exception as e:
            result, code, why = None, getattr(e, "code", None) if isinstance(e, MCPError) else None, _why(e)
        if code == CONNECTION_CLOSED:
            self.stop()   # the process is gone: end its session too
            raise VllamaError(f"the MCP server {self.name} stopped during the call{self._stderr(' (it wrote: {})')}")
        if code == REQUEST_TIMEOUT:
            raise VllamaError(f"the MCP server {self.name} did not answer within {self.timeout:g} s "
                              "(raise timeout= in v.mcp to wait longer)")
        if result is None:
            raise VllamaError(f"the MCP server {self.name} failed: {why}")
        out = _output(result)
        if result.is_error:
            raise VllamaError(out.text or "the tool reported an error")
        return out

def _output(result) -> ToolOutput:
    """A CallToolResult as text for the model, and its images as data: URLs."""
    texts, images = [], []
    for part in result.content or []:
        kind = getattr(part, "type", "")
        if kind == "text":
            texts.append(part.text)
        elif kind == "image":
            images.append(f"data:{part.mime_type};base64,{part.data}")
        elif kind == "resource_link":
            texts.append(f"[resource {part.uri}]")
        elif kind == "resource":
            res = part.resource
            texts.append(getattr(res, "text", None) or f"[resource {res.uri}]")
        else:
            texts.append(f"[{kind or 'content'} the notebook cannot show]")
    if not texts and result.structured_content is not None:
        texts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolOutput("\n".join(texts), images)


def _default_name(spec: tuple) -> str:
    if spec[0] == "url":
        from urllib.parse import urlsplit

        return urlsplit(spec[1]).netloc or "mcp"
    words = [w for w in spec[1:] if not w.startswith("-")]
    if len(spec) > 2 and spec[2] == "-m":
        words = [spec[3]] if len(spec) > 3 else words
    return os.path.basename(words[-1] if words else spec[1]) or "mcp"


def _why(e: BaseException) -> str:
    """One line from an exception the SDK raised (exception groups: their first leaf)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
