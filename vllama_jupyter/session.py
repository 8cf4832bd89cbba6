"""The kernel's one engine: which model is loaded (a load is a transaction), the servers the
kernel started, requests and status. Its other parts are modules of their own: the conversation
and tool loop (conversation.py), sharing (share_coordinator.py) and the lock (engine_lock.py)."""
from __future__ import annotations

import atexit
import sys
import threading
import time
from dataclasses import dataclass, field

from . import engines
from .conversation import Conversation
from .engine_lock import EngineLock
from .engines import selection
from .engines.base import BaseEngine
from .errors import VllamaError, first_line
from .hardware import hardware
from .result import Result, Stream
from .sampling import Sampling
from .share_coordinator import ShareCoordinator, ShareSeam  # noqa: F401  (ShareSeam: re-exported)


@dataclass(frozen=True)
class Loaded:
    """What is loaded: enough to load it again."""

    choice: selection.Choice
    ref: object          # models.ModelRef or models.RemoteRef
    options: dict


@dataclass
class Session(Conversation, ShareCoordinator, EngineLock):
    engine: BaseEngine | None = None
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
    _in_flight: int = 0   # shared requests running on a concurrent engine (vLLM, llama.cpp)

    @property
    def choice(self) -> selection.Choice | None:
        return self.loaded.choice if self.loaded else None

    @property
    def ref(self):
        return self.loaded.ref if self.loaded else None

    # -- references -----------------------------------------------------------------------
    def resolve(self, model, engine: str, options: dict | None = None):
        """The typed reference `model` names for `engine` (hub lookups are remembered)."""
        if not engines.kind(engine).in_process:
            return engines.reference(model, engine, options)
        key = (str(model).strip() if model is not None else "", engine)
        ref = self._refs.get(key)
        if ref is None or not ref.path.exists():
            ref = self._refs[key] = engines.reference(model, engine)
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
            choice = selection.choose(hardware, override=engine, config=self.config_engine)
        cls = engines.engine_class(choice.engine)
        ref = cls.check(self.resolve(model, choice.engine, options), options, replacing=self.engine is not None)
        with self.hold("loading", wait=self._end_sharing()):
            previous = self.loaded
            self.stop_sharing()
            self._close_engine()
            try:
                self._start(Loaded(choice, ref, dict(options)))
            except Exception as e:
                raise VllamaError(f"could not load {ref.name}: {first_line(e)}{self._restore(previous)}") from None
            except BaseException:  # an interrupt mid-load: put the old model back, then stop
                self._restore(previous)
                raise
            if previous is None or previous.ref != ref:
                self.history.clear()
        return self.status()

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
            return f"; loading {previous.ref.name} back failed too ({first_line(e)}): load a model again"

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
            self.load(server.model, engines.REMOTE, **opts)
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

    # -- generating -----------------------------------------------------------------------
    def stream(self, prompt, sampling: Sampling | None = None, images=None, **overrides) -> Stream:
        """Stream a completion of `prompt`. The session is busy from the first delta asked for
        until the stream ends, is closed or raises. With `images` the prompt is asked as one chat
        turn (the model's template places the images); the conversation is left as it was."""
        if images is not None:
            return self.chat(prompt, sampling, keep=False, images=images, **overrides)
        s = Sampling.make(sampling, **overrides)
        return self._guarded(self._engine().stream(prompt, s))

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

    def fit(self, model=None, n_ctx: int | None = None, engine: str | None = None, **options):
        """Whether `model` (default: the embedded one) fits in memory with a context of `n_ctx`
        tokens (default: what a load takes), and the largest context that does: its plan. Nothing
        is loaded, freed or downloaded (a Hub model's header comes from the Hub by a ranged read)."""
        from .options import Option

        n_ctx = Option("n_ctx", "int", None, "context length in tokens", low=16, optional=True).check(n_ctx)
        choice = selection.choose(hardware, override=engine, config=self.config_engine)
        cls = engines.engine_class(choice.engine)
        return cls.plan(engines.reference(model, choice.engine, options, fetch=False), n_ctx, options)

    # -- LoRA adapters ----------------------------------------------------------------------
    def lora_add(self, path, name: str | None = None, scale: float = 1.0) -> dict:
        """Add a LoRA adapter (a GGUF adapter or a PEFT folder) to the loaded model; requests name it
        with lora=NAME. Checked and converted before the engine is held; the engine is as it was
        when it cannot be added."""
        adapters = self._adapters()
        a = adapters.prepare(path, name, scale)
        with self.hold("loading"):
            adapters.add(a)
        self.loaded.options.setdefault("lora", {})[a.name] = (str(a.source), a.scale)   # a reload keeps it
        return a.record()

    def lora_remove(self, name: str) -> None:
        adapters = self._adapters()
        with self.hold("loading"):
            a = adapters.remove(name)
        self.loaded.options.get("lora", {}).pop(a.name, None)

    def lora_list(self) -> list[dict]:
        return self._adapters().records() if self.engine is not None and hasattr(self.engine, "lora") else []

    def _adapters(self):
        eng = self._engine()
        if not eng.capabilities().lora:
            raise VllamaError(f"the {eng.capabilities().label} engine takes no LoRA adapters here: load the model on "
                              "llama.cpp (engine='llamacpp')")
        return eng.lora

    def capabilities(self):
        """What the loaded engine and model can do (the default model is loaded first)."""
        return self._engine().capabilities()

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` is for the loaded model (the default one is loaded first)."""
        return self._engine().count_tokens(text)

    def embed(self, texts, normalize: bool = True):
        """Embeddings of `texts` (a string or a list of them) as a numpy array (n, dim)."""
        eng = self._engine()
        with self.hold("embedding"):
            return eng.embed(texts, normalize)

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
        elif self.shared_from():
            out["shared_from"] = self.shared_from()
        out["history_messages"] = len(self.history)
        out["time"] = time.strftime("%H:%M:%S")
        return out


def _served_device(servers: list, url) -> dict:
    """Where the server behind the engine runs, when this session started it and chose that."""
    for server in servers:
        if server.url == url and server.device:
            return {"device": f"{server.device.upper()} (a server this kernel started)"}
    return {}


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
