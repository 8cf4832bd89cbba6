"""The session's lock: a cell, the panel's thread and a shared request never drive the engine
at once; a stream holds it from its first delta to its end, and listeners hear each change."""
from __future__ import annotations

from contextlib import contextmanager

from .errors import BusyError
from .result import Stream
from .seam import SHARED_WAIT_S


class EngineLock:
    """The lock, as a part of Session (whose fields it uses: _lock, state, last, listeners, sharing)."""

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
        self.state = "serving" if self._in_flight else "idle"   # shared requests may still run beside
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
