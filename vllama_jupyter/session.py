"""The kernel's one engine: load (a transaction), switch, unload, chat history, and a lock so that
a cell and a widget thread never drive the engine at once."""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from . import engines, models, selection
from .errors import BusyError, VllamaError
from .hardware import hardware
from .result import Result, Stream
from .sampling import Sampling
from .seam import SHARED_WAIT_S, SHARING_END_S, UNSHARED, Lease
from .messages import check_messages
from .templates import fit_context
from .tools import MAX_ROUNDS, check_choice, make_tools, run_call, schemas, shown


@dataclass(frozen=True)
class Loaded:
    """What is loaded: enough to load it again."""

    choice: selection.Choice
    ref: object          # models.ModelRef or models.RemoteRef
    options: dict


@dataclass
class Session:
    engine: object | None = None
    loaded: Loaded | None = None
    history: list[dict] = field(default_factory=list)
    last: Result | None = None
    state: str = "idle"          # idle, loading, generating
    config_engine: str | None = None   # set by %config VllamaMagics.engine
    servers: list = field(default_factory=list)   # servers this session started (see serve())
    listeners: list = field(default_factory=list)  # called with the session after loads, unloads, state changes
    sharing: object | None = None      # share.Sharing while this kernel shares its engine
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _refs: dict = field(default_factory=dict)      # (text, engine) -> resolved reference
    _abandoned: set = field(default_factory=set)   # pids of shared engines this kernel let go of
    _served: threading.Condition = field(default_factory=threading.Condition)   # guards sharing and _in_flight
    _in_flight: int = 0   # shared requests running on a concurrent engine (vLLM)

    @property
    def choice(self) -> selection.Choice | None:
        return self.loaded.choice if self.loaded else None

    @property
    def ref(self):
        return self.loaded.ref if self.loaded else None

    # -- references -----------------------------------------------------------------------
    def resolve(self, model, engine: str, options: dict | None = None):
        """The typed reference `model` names for `engine` (hub lookups are remembered)."""
        if engine == "openai":
            from .engines.remote import remote_ref
            return remote_ref(model, options or {})
        key = (str(model).strip() if model is not None else "", engine)
        ref = self._refs.get(key)
        if ref is None or not ref.path.exists():
            ref = self._refs[key] = models.resolve(model, engine)
        return ref

    def needs_load(self, model=None, engine: str | None = None, **options) -> bool:
        """Whether serving a request for `model` on `engine` with `options` needs a (re)load.
        None means "whatever is loaded"; named ones are compared as resolved references."""
        if self.engine is None:
            return True
        loaded = self.loaded
        if engine is not None and engines.check_name(engine) != loaded.choice.engine:
            return True
        if options and options != loaded.options:
            return True
        if model is None:
            return False
        return self.resolve(model, loaded.choice.engine, options or loaded.options) != loaded.ref

    def ensure(self, model=None, engine: str | None = None, **options) -> object:
        """The loaded engine, loading `model` first when it (or nothing) is loaded."""
        if self.needs_load(model, engine, **options):
            self.load(model, engine, **options)
        return self.engine

    # -- loading --------------------------------------------------------------------------
    def load(self, model=None, engine: str | None = None, **options) -> dict:
        """Load `model` (default: the embedded one) on `engine` (default: chosen from the hardware).

        A transaction: everything that costs no memory is checked first; then the old engine is
        freed and the new one loaded; if that fails, the old one is loaded back."""
        shared = self._find_shared(model, engine, options)
        if shared:
            choice, options = shared
        else:
            choice = selection.choose(hardware(), override=engine, config=self.config_engine)
        cls = engines.engine_class(choice.engine)
        ref = cls.check(self.resolve(model, choice.engine, options), options)
        with self.hold("loading", wait=self._end_sharing()):
            previous = self.loaded
            self.stop_sharing()
            self._close_engine()
            try:
                self._start(Loaded(choice, ref, dict(options)))
            except Exception as e:
                raise VllamaError(f"could not load {ref.name}: {_line(e)}{self._restore(previous)}") from None
            except BaseException:  # an interrupt mid-load: put the old model back, then stop
                self._restore(previous)
                raise
            if previous is None or previous.ref != ref:
                self.history.clear()
        return self.status()

    def _find_shared(self, model, engine, options):
        """With nothing named (no model, engine, options or configured engine), another notebook's
        live shared engine: (choice, options) to connect to it; else None."""
        from . import sharing as share

        if (model is not None or engine is not None or options or self.config_engine or self.sharing
                or os.environ.get("VLLAMA_ENGINE") or not share.enabled()):
            return None
        found = [f for f in share.live_shares() if f["pid"] not in self._abandoned]
        if not found:
            return None
        info = found[0]
        label = {"llamacpp": "llama.cpp", "vllm": "vLLM"}.get(info["engine"], info["engine"])
        reason = (f"using the shared {label} engine with model {info['model']}, started by another notebook "
                  f"(pid {info['pid']}); name a model, or set VLLAMA_SHARED=0, to load one in this kernel")
        return selection.Choice("openai", reason), share.connect_options(info)

    def share(self, idle_timeout: float = 1800.0, port: int | None = None) -> dict:
        """Serve this kernel's engine to the user's other notebooks and to any OpenAI client on the
        machine (see vllama_jupyter.sharing); `port` fixes the port (default: a free one)."""
        from . import sharing as share

        idle_timeout = share.check_idle_timeout(idle_timeout)
        port = share.check_port(port)
        eng = self._engine()
        if self.loaded.choice.engine == "openai":
            raise VllamaError("this kernel uses a server, not an engine of its own: share the engine in the "
                              "notebook that has it loaded, or load a model here first")
        if self.sharing is not None and port not in (0, self.sharing.server.port):
            raise VllamaError(f"the engine is already shared at {self.sharing.url}: stop it first "
                              "(%vllama share --stop) to share it on another port")
        if self.sharing is None:
            sharing = share.Sharing(ShareSeam(self), idle_timeout, port)
            with self._served:
                self.sharing = sharing
            sharing.start()
        else:
            self.sharing.idle_timeout = idle_timeout
        self._notify()
        return {"engine": eng.name, "model": self.loaded.ref.name, **self.sharing.describe(),
                "how_to_use": self.sharing.how_to_use()}

    def _end_sharing(self) -> float:
        """Stop sharing before a load or unload: the other notebooks' requests end at their next
        token; wait (a bounded time) for those running at once on a concurrent engine. Returns how
        long to wait for the one holding the engine's lock."""
        if self.sharing is None:
            return 0.0
        self.stop_sharing()
        with self._served:
            self._served.wait_for(lambda: self._in_flight == 0, SHARING_END_S)
        return SHARING_END_S

    def stop_sharing(self) -> None:
        """Stop serving other notebooks; they get one clear line at their next request."""
        with self._served:
            sharing, self.sharing = self.sharing, None
        if sharing is not None:
            sharing.stop()
            self._notify()

    def lease(self, wait: float) -> Lease:
        """The engine for one request from another notebook, under the rule a cell follows: an
        engine that runs one request at a time is held (waiting up to `wait` s for it); a
        concurrent one (vLLM) is counted, so a load or unload waits for the request to end."""
        eng = self.engine
        if eng is not None and eng.concurrent:
            with self._served:
                if self.sharing is None or self.engine is not eng:
                    raise VllamaError(UNSHARED)
                self._in_flight += 1
            return Lease(eng, self._leave)
        self._acquire("serving", wait)
        if self.sharing is None or self.engine is None:
            self._release()
            raise VllamaError(UNSHARED)
        return Lease(self.engine, self._release)

    def _leave(self) -> None:
        with self._served:
            self._in_flight -= 1
            self._served.notify_all()

    def _start(self, spec: Loaded) -> None:
        new = engines.engine_class(spec.choice.engine)()
        try:
            new.load(spec.ref, **spec.options)
        except BaseException:
            new.close()
            raise
        self.engine, self.loaded = new, spec
        new.prefetch_identity()   # the record's model hash, computed in the background

    def _restore(self, previous: Loaded | None) -> str:
        """Load `previous` back after a failed load; the words that tell the user how it went."""
        self.loaded = None
        if previous is None:
            return ""
        try:
            self._start(previous)
            return f"; {previous.ref.name} is loaded again"
        except Exception as e:
            self.loaded = None
            return f"; loading {previous.ref.name} back failed too ({_line(e)}): load a model again"

    def unload(self) -> None:
        """Free the engine and its memory, and stop the servers this session started."""
        with self.hold("loading", wait=self._end_sharing()):
            self.stop_sharing()
            self._close_engine()
            self.stop_servers()
            self.loaded = None
            self.history.clear()

    def serve(self, kind: str, model: str | None = None, load: bool = True, **options):
        """Start a local OpenAI-compatible server (kind 'llamacpp', 'vllm' or 'max') on 127.0.0.1 and,
        with load=True, make it this session's engine. It stops on unload() or kernel exit."""
        from . import servers

        server = servers.make(kind, model, **options).start()
        self.servers.append(server)
        if load:
            opts = {"url": server.url, "preset": server.preset}
            if server.context_length:
                opts["context_length"] = server.context_length
            if options.get("api_key_env"):
                opts["api_key_env"] = options["api_key_env"]
            self.load(server.model, "openai", **opts)
        return server

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def _shutdown(self) -> None:
        self.stop_sharing()
        self._close_engine()
        self.stop_servers()
        if "vllama_jupyter.servers" in sys.modules:
            sys.modules["vllama_jupyter.servers"].remove_log_folder()

    def _close_engine(self) -> None:
        if self.engine is not None:
            eng, self.engine = self.engine, None
            eng.close()

    def _engine(self) -> object:
        """The engine for a request: the loaded one, or the default model loaded now."""
        eng = self.ensure()
        why = eng.dead()
        if why:
            self._let_go_if_gone()
            raise VllamaError(why)
        return eng

    def _let_go_if_gone(self) -> None:
        """Another notebook's shared engine went away: let go of it, so the next request loads here."""
        eng = self.engine
        if eng is not None and getattr(eng, "shared_by", None) and eng.dead():
            self._abandoned.add(eng.shared_by)   # a dying kernel may still look alive for a moment
            self._close_engine()
            self.loaded = None
            self._notify()

    # -- generating -----------------------------------------------------------------------
    def stream(self, prompt, sampling: Sampling | None = None, images=None, **overrides) -> Stream:
        """Stream a completion of `prompt`. The session is busy from the first delta asked for
        until the stream ends, is closed or raises. With `images` the prompt is asked as one chat
        turn (the model's template places the images); the conversation is left as it was."""
        if images is not None:
            return self.chat(prompt, sampling, keep=False, images=images, **overrides)
        s = Sampling.make(sampling, **overrides)
        return self._guarded(self._engine().stream(prompt, s))

    def chat(self, message, sampling: Sampling | None = None, system: str | None = None,
             keep: bool = True, tools=None, images=None, **overrides) -> Stream:
        """Continue the conversation with `message` (text, or a list of OpenAI-shaped messages); the
        reply joins the history when it ends. With keep=False the message is answered on its own
        and the history is left as it was. `tools`: Python functions the model may call (the
        calls come back in `result.tool_calls`; chat_loop() runs them). `images`: figures, PIL
        images, arrays, bytes or paths the model is shown with a text message."""
        s = Sampling.make(sampling, **overrides)
        table = make_tools(tools)
        check_choice(s.tool_choice, table)
        eng = self._engine()
        msgs = fit_context(eng, self._conversation(message, system, keep, images), s)

        def remember(stream: Stream) -> None:
            if keep and stream.finish_reason != "error":
                self.history[:] = msgs + [reply(stream)]
        return self._guarded(eng.chat(msgs, s, schemas(table)), remember)

    def chat_loop(self, message, sampling: Sampling | None = None, system: str | None = None, keep: bool = True,
                  tools=None, run_tools: bool = False, render=None, show=None, max_rounds: int = MAX_ROUNDS,
                  images=None, **overrides) -> Result:
        """Chat with tools to the end: each round's calls are shown and, with run_tools=True, run,
        their results sent back, and the model asked again (at most `max_rounds` rounds, 8 by default).
        `render(stream) -> Result` shows a round (default: none), `show(line)` a call or result.
        Returns the last round's Result; `.rounds` holds the ones before it."""
        s = Sampling.make(sampling, **overrides)
        table = make_tools(tools)
        check_choice(s.tool_choice, table)
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise VllamaError(f"max_rounds must be a whole number >= 1 (got {max_rounds!r}): how many times the model "
                              "may be asked again after its tool calls")
        render = render or (lambda st: st.run())
        show = show or (lambda line: None)
        eng = self._engine()
        msgs = fit_context(eng, self._conversation(message, system, keep, images), s)
        rounds: list[Result] = []
        for _ in range(max_rounds):
            result = render(self._guarded(self._engine().chat(msgs, s, schemas(table))))
            rounds.append(result)
            if result.finish_reason == "error":
                break
            msgs = msgs + [reply(result)]
            if not result.tool_calls or result.interrupted:
                break
            if not run_tools:
                for call in result.tool_calls:
                    show(f"→ {shown(call)}  (not run: pass run_tools=True, or --run-tools, to run it)")
                break
            for call in result.tool_calls:
                show(f"→ {shown(call)}")
                out, _ok = run_call(call, table)
                show(f"← {out}")
                msgs.append({"role": "tool", "tool_call_id": call["id"], "content": out})
            if s.tool_choice not in (None, "auto", "none"):
                s = replace(s, tool_choice="auto")   # a forced call is forced once; then the model answers
        else:
            from .errors import notice
            notice(f"stopped after {max_rounds} round{'s' if max_rounds > 1 else ''} of tool calls: the model kept "
                   "calling tools (raise max_rounds, --max-rounds, to let it go on)")
        if keep:
            self.history[:] = msgs
        final = rounds[-1]
        final.rounds = rounds[:-1]
        return final

    def _conversation(self, message, system: str | None, keep: bool, images=None) -> list[dict]:
        """The history (when kept), the system prompt, and the new message(s), checked."""
        if images is not None and not isinstance(message, str):
            raise VllamaError("images= goes with a text message; in a list of messages put them in the content "
                              "as {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,...'}} parts")
        if message is None or isinstance(message, str):
            if not (message or "").strip():
                raise VllamaError("the message is empty: write something to say")
            new = [{"role": "user", "content": message}]
            if images is not None:
                from .images import as_images

                parts = [p.part() for p in as_images(images)]
                if not parts:
                    raise VllamaError("images= is empty: give one or more images, or leave it out")
                new = [{"role": "user", "content": parts + [{"type": "text", "text": message}]}]
        elif isinstance(message, list):
            new = check_messages(message)
        else:
            raise VllamaError(f"a chat message is text or a list of messages, not {type(message).__name__}")
        msgs = list(self.history) if keep else []
        if system and not any(m["role"] in ("system", "developer") for m in msgs + new[:1]):
            msgs.insert(0, {"role": "system", "content": system})
        return check_messages(msgs + new)

    def generate(self, prompt, sampling: Sampling | None = None, images=None, **overrides) -> Result:
        return self.stream(prompt, sampling, images=images, **overrides).run()

    def batch(self, prompts, sampling: Sampling | None = None, **overrides) -> list[Result]:
        s = Sampling.make(sampling, **overrides)
        eng = self._engine()
        with self.hold("generating"):
            results = eng.batch(prompts, s)
        if results:
            self.last = results[-1]
        return results

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` is for the loaded model (the default one is loaded first)."""
        return self._engine().count_tokens(text)

    def embed(self, texts, normalize: bool = True):
        """Embeddings of `texts` (a string or a list of them) as a numpy array (n, dim)."""
        eng = self._engine()
        with self.hold("embedding"):
            return eng.embed(texts, normalize)

    def _guarded(self, stream: Stream, on_end=None) -> Stream:
        def end(st: Stream) -> None:
            self.last = st.result
            try:
                if on_end:
                    on_end(st)
            finally:
                self._release()
                if st.finish_reason == "error":
                    self._let_go_if_gone()
        # while shared, a request from another notebook may hold the engine: wait for it
        wait = SHARED_WAIT_S if self.sharing is not None else 0.0
        return stream.on(start=lambda: self._acquire("generating", wait), end=end)

    # -- the lock -------------------------------------------------------------------------
    def _acquire(self, state: str, wait: float = 0.0) -> None:
        if not (self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False)):
            raise BusyError(f"the engine is busy ({self.state}): wait for it to finish, press Stop, "
                            "or close() the stream you started")
        self.state = state
        self._notify()

    def _release(self) -> None:
        self.state = "idle"
        self._lock.release()
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener(self)
            except Exception:
                pass  # a broken display must not break the engine

    @contextmanager
    def hold(self, state: str = "generating", wait: float = 0.0):
        """Hold the engine for a run of requests (benchmarks, a shared engine's requests), waiting
        up to `wait` seconds for it; BusyError when it stays held."""
        self._acquire(state, wait)
        try:
            yield self.engine
        finally:
            self._release()


    @property
    def busy(self) -> bool:
        return self._lock.locked()

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        """What is loaded, where, and why this engine."""
        out = {"state": self.state, "loaded": self.engine is not None}
        if self.engine is not None:
            why_dead = self.engine.dead()
            if why_dead:
                out.update(engine=self.loaded.choice.engine, model=self.loaded.ref.name, dead=why_dead)
            else:
                out.update(self.engine.info())
                out.update(_served_device(self.servers, out.get("path")))
            out["why"] = str(self.loaded.choice)
        else:
            try:
                out["would_use"] = str(selection.choose(hardware(), config=self.config_engine))
            except VllamaError as e:
                out["would_use"] = str(e)
        if self.sharing is not None:
            out["shared"] = self.sharing.describe()
        elif self.engine is not None and getattr(self.engine, "shared_by", None):
            out["shared_from"] = self.engine.shared_by
        out["history_messages"] = len(self.history)
        out["time"] = time.strftime("%H:%M:%S")
        return out


def reply(out) -> dict:
    """The assistant message a finished stream or result adds to the conversation: the answer and
    any tool calls; the thinking rides along as reasoning_content (templates that show earlier
    thinking read it, the others leave it out)."""
    msg: dict = {"role": "assistant", "content": out.text}
    if out.tool_calls:
        msg["tool_calls"] = [dict(c) for c in out.tool_calls]
    if out.reasoning:
        msg["reasoning_content"] = out.reasoning
    return msg


def _served_device(servers: list, url) -> dict:
    """Where the server behind the engine runs, when this session started it and chose that."""
    for server in servers:
        if server.url == url and server.device:
            return {"device": f"{server.device.upper()} (a server this kernel started)"}
    return {}


def _line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.splitlines()[0].split())[:300]


class ShareSeam:
    """The session as a shared engine's server sees it (sharing.Seam): nothing more."""

    def __init__(self, session: Session):
        self._session = session

    @property
    def engine_name(self) -> str:
        return self._session.loaded.choice.engine

    @property
    def model(self) -> str:
        loaded = self._session.loaded
        return loaded.ref.name if loaded else ""

    @property
    def busy(self) -> bool:
        return self._session.busy

    def engine(self):
        return self._session.engine

    def lease(self, wait: float) -> Lease:
        return self._session.lease(wait)

    def changed(self) -> None:
        self._session._notify()

    def stop(self) -> None:
        self._session.stop_sharing()


_SESSION: Session | None = None
_SESSION_LOCK = threading.Lock()


def get_session() -> Session:
    """The kernel's one session."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = Session()
            atexit.register(_SESSION._shutdown)  # free engines, stop servers before the interpreter exits
        return _SESSION
