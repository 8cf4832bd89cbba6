"""The narrow port between the kernel's session and the server that shares its engine: what the
server may ask of the session (Seam), one request's hold on the engine (Lease), and the words
and bounds both sides use."""
from __future__ import annotations

from typing import Protocol

CLIENT_HEADER = "X-Vllama-Client"   # the client kernel's pid, to count the kernels using a share
UNSHARED = "the notebook that shares this engine unloaded or reloaded it: this request was stopped"
SHARED_WAIT_S = 600.0   # how long a shared request waits while the engine serves another one
SHARING_END_S = 30.0    # how long a load or unload waits for shared requests to end
IDLE_TIMEOUT_S = 1800.0  # a share with no request for this long stops by itself


class Seam(Protocol):
    """All a shared engine's server may do with the kernel's session."""

    engine_name: str   # llamacpp, vllm
    model: str         # the loaded model's name
    busy: bool         # a cell, widget or shared request holds the engine

    def engine(self):   # the loaded engine, None when there is none (for models and token counts)
        ...

    def lease(self, wait: float) -> "Lease":   # the engine for one request, under the rule a cell follows
        ...

    def changed(self) -> None:   # the client count changed: refresh the panel and status bar
        ...

    def stop(self) -> None:   # stop sharing (idle timeout)
        ...


class Lease:
    """One shared request's hold on the engine; release() once it is done (idempotent)."""

    def __init__(self, engine, release):
        self.engine, self._release = engine, release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
