"""The session's part in sharing: serving this kernel's engine to other notebooks and OpenAI
clients (a request from outside takes the engine under the rule a cell follows), and using
another notebook's shared engine, letting go of it when it goes away."""
from __future__ import annotations

import os

from . import engines
from .engines.selection import Choice
from .errors import VllamaError
from .seam import IDLE_TIMEOUT_S, SHARING_END_S, UNSHARED, Lease


class ShareCoordinator:
    """Sharing, as a part of Session (whose fields it uses: engine, loaded, sharing, _served,
    _in_flight, _abandoned)."""

    def shared_from(self) -> int | None:
        """The pid of the notebook whose shared engine this kernel uses, None when it is its own."""
        eng = self.engine
        return eng.capabilities().shared_from if eng is not None else None

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
        label = engines.KINDS[info["engine"]].label if info["engine"] in engines.KINDS else info["engine"]
        reason = (f"using the shared {label} engine with model {info['model']}, started by another notebook "
                  f"(pid {info['pid']}); name a model, or set VLLAMA_SHARED=0, to load one in this kernel")
        return Choice(engines.REMOTE, reason), share.connect_options(info)

    def share(self, idle_timeout: float = IDLE_TIMEOUT_S, port: int | None = None) -> dict:
        """Serve this kernel's engine to the user's other notebooks and to any OpenAI client on the
        machine (see vllama_jupyter.sharing); `port` fixes the port (default: a free one)."""
        from . import sharing as share

        idle_timeout = share.check_idle_timeout(idle_timeout)
        port = share.check_port(port)
        eng = self._engine()
        if not eng.capabilities().in_process:
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
        concurrent one (vLLM, llama.cpp with parallel > 1) is counted, so a load or unload waits for
        the request to end."""
        eng = self.engine
        if eng is not None and eng.capabilities().concurrent:
            with self._served:
                if self.sharing is None or self.engine is not eng:
                    raise VllamaError(UNSHARED)
                self._in_flight += 1
                if self.state == "idle":
                    self.state = "serving"
            self._notify()
            return Lease(eng, self._leave)
        self._acquire("serving", wait)
        if self.sharing is None or self.engine is None:
            self._release()
            raise VllamaError(UNSHARED)
        return Lease(self.engine, self._release)

    def _leave(self) -> None:
        with self._served:
            self._in_flight -= 1
            if not self._in_flight and self.state == "serving":
                self.state = "idle"
            self._served.notify_all()
        self._notify()

    def _let_go_if_gone(self) -> None:
        """Another notebook's shared engine went away: let go of it, so the next request loads here."""
        owner = self.shared_from()
        if owner and self.engine.dead():
            self._abandoned.add(owner)   # a dying kernel may still look alive for a moment
            self._close_engine()
            self.loaded = None
            self._notify()


class ShareSeam:
    """The session as a shared engine's server sees it (sharing.Seam): nothing more."""

    def __init__(self, session):
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
