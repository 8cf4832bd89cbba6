"""The kernel side of the JupyterLab status-bar item: a comm target "vllama". When the front end
opens it, the kernel sends the session's status at once and again on every change (load, unload,
generating, idle). A kernel without the extension loaded has no such target, so the item hides."""
from __future__ import annotations

from .session import Session, get_session

TARGET = "vllama"


def status_message(session: Session) -> dict:
    """What the status bar shows: engine, model, state, and the last generation's tokens/s."""
    loaded = session.loaded if session.engine is not None else None
    engine = loaded.choice.engine if loaded else None
    model = loaded.ref.name if loaded else None
    last = session.last.tokens_per_s if session.last is not None else None
    return {"loaded": session.engine is not None, "engine": engine, "model": model,
            "state": session.state, "tokens_per_s": None if last is None else round(last, 1),
            "shared": shared_text(session)}


def shared_text(session: Session) -> str | None:
    """'shared with N kernels' when this kernel shares its engine, 'shared by another notebook'
    when it uses another's; None otherwise."""
    if session.sharing is not None:
        n = session.sharing.client_count()
        return f"shared with {n} kernel{'s' if n != 1 else ''}"
    if session.shared_from():
        return "shared by another notebook"
    return None


def register(ipython) -> bool:
    """Register the comm target in a kernel (a no-op in a terminal IPython)."""
    if getattr(ipython, "kernel", None) is None:
        return False
    from comm import get_comm_manager

    get_comm_manager().register_target(TARGET, _opened)
    return True


def _opened(comm, msg) -> None:
    session = get_session()
    last: dict = {}

    def push(s: Session) -> None:
        message = status_message(s)
        if message != last:  # only changes go over the wire
            last.clear()
            last.update(message)
            comm.send(message)

    def closed(_msg) -> None:
        if push in session.listeners:
            session.listeners.remove(push)

    comm.on_close(closed)
    session.listeners.append(push)
    push(session)
