"""The kernel's one engine: load, switch, unload, chat history, and a lock so that a cell and a
widget thread never drive the engine at once."""
from __future__ import annotations

import atexit
import threading
from contextlib import contextmanager
import time
from dataclasses import dataclass, field

from . import engines, models, selection
from .errors import BusyError, VllamaError
from .hardware import hardware
from .result import Result, Stream
from .sampling import Sampling


@dataclass
class Session:
    engine: object | None = None
    choice: selection.Choice | None = None
    ref: models.ModelRef | None = None
    history: list[dict] = field(default_factory=list)
    last: Result | None = None
    state: str = "idle"          # idle, loading, generating
    config_engine: str | None = None   # set by %config VllamaMagics.engine
    servers: list = field(default_factory=list)   # servers this session started (see serve())
    listeners: list = field(default_factory=list)  # called with the session after loads, unloads, state changes
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- loading --------------------------------------------------------------------------
    def load(self, model: str | None = None, engine: str | None = None, **options) -> dict:
        """Load `model` (default: the embedded one) on `engine` (default: chosen from the hardware).

        The new model is checked before the old one is freed, then the old one is freed before
        the new one is loaded, so two models never share memory."""
        choice = selection.choose(hardware(), override=engine, config=self.config_engine)
        cls = engines.engine_class(choice.engine)
        ref = model if choice.engine == "openai" else models.resolve(model, choice.engine)
        cls.check(ref, options)
        with self._hold("loading"):
            self._close_engine()
            new = cls()
            try:
                new.load(ref, **options)
            except BaseException:
                new.close()
                raise
            self.engine, self.choice, self.ref = new, choice, ref
            self.history.clear()
        return self.status()

    def unload(self) -> None:
        """Free the engine and its memory, and stop the servers this session started."""
        with self._hold("loading"):
            self._close_engine()
            self.stop_servers()
            self.choice = self.ref = None
            self.history.clear()

    def serve(self, kind: str, model: str | None = None, load: bool = True, **options):
        """Start a local OpenAI-compatible server (kind 'llamacpp' or 'vllm') on 127.0.0.1 and,
        with load=True, make it this session's engine. It stops on unload() or kernel exit."""
        from . import servers

        server = servers.make(kind, model, **options).start()
        self.servers.append(server)
        if load:
            self.load(server.model, "openai", url=server.url, preset=server.preset,
                      api_key_env=options.get("api_key_env"))
        return server

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def _shutdown(self) -> None:
        self._close_engine()
        self.stop_servers()

    def _close_engine(self) -> None:
        if self.engine is not None:
            eng, self.engine = self.engine, None
            eng.close()

    def ensure(self) -> object:
        """The loaded engine, loading the default model first if nothing is loaded."""
        if self.engine is None:
            self.load()
        return self.engine

    # -- generating -----------------------------------------------------------------------
    def stream(self, prompt, sampling: Sampling | None = None, **overrides) -> Stream:
        """Stream a completion of `prompt`; the session is busy until the stream ends or closes."""
        s = Sampling.make(sampling, **overrides)
        eng = self.ensure()
        return self._guarded(lambda: eng.stream(prompt, s))

    def chat(self, message: str, sampling: Sampling | None = None, system: str | None = None,
             keep: bool = True, **overrides) -> Stream:
        """Continue the conversation with `message`; the reply joins the history when it ends.
        With keep=False the message is answered on its own and the history is left as it was."""
        s = Sampling.make(sampling, **overrides)
        eng = self.ensure()
        if not isinstance(message, str) or not message.strip():
            raise VllamaError("the message is empty: write something to say")
        msgs = list(self.history) if keep else []
        if system and not (msgs and msgs[0]["role"] == "system"):
            msgs.insert(0, {"role": "system", "content": system})
        msgs.append({"role": "user", "content": message})

        def remember(stream: Stream) -> None:
            if keep:
                self.history[:] = msgs + [{"role": "assistant", "content": stream.text}]
        return self._guarded(lambda: eng.chat(msgs, s), remember)

    def generate(self, prompt, sampling: Sampling | None = None, **overrides) -> Result:
        return self.stream(prompt, sampling, **overrides).run()

    def batch(self, prompts: list, sampling: Sampling | None = None, **overrides) -> list[Result]:
        s = Sampling.make(sampling, **overrides)
        eng = self.ensure()
        with self._hold("generating"):
            results = eng.batch(prompts, s)
        if results:
            self.last = results[-1]
        return results

    def _guarded(self, start, on_end=None) -> Stream:
        self._acquire("generating")
        try:
            stream = start()
        except BaseException:
            self._release()
            raise

        def end(st: Stream) -> None:
            self.last = st.result
            try:
                if on_end:
                    on_end(st)
            finally:
                self._release()
        stream._on_end = end
        return stream

    # -- the lock -------------------------------------------------------------------------
    def _acquire(self, state: str) -> None:
        if not self._lock.acquire(blocking=False):
            raise BusyError(f"the engine is busy ({self.state}): wait for it to finish or press Stop")
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
    def _hold(self, state: str):
        self._acquire(state)
        try:
            yield
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
            out.update(self.engine.info())
            out["why"] = str(self.choice)
        else:
            try:
                out["would_use"] = str(selection.choose(hardware(), config=self.config_engine))
            except VllamaError as e:
                out["would_use"] = str(e)
        out["history_messages"] = len(self.history)
        out["time"] = time.strftime("%H:%M:%S")
        return out


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
