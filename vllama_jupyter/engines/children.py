"""The processes an engine starts: how much memory they hold, whether they live, and reaping
them (waited for, so none is left a zombie; stragglers killed)."""
from __future__ import annotations


def stop_resource_tracker() -> None:
    """multiprocessing's resource tracker, started for vLLM's engine processes, is the last child
    left after shutdown; it starts again by itself when something needs it."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._stop()
    except Exception:
        pass


def rss(p) -> int:
    try:
        return p.memory_info().rss
    except Exception:
        return 0


def reap(children: list, timeout: float = 30.0) -> None:
    """Wait for the engine's processes to exit and collect them (no zombies); kill stragglers."""
    import psutil

    _, left = psutil.wait_procs(children, timeout=timeout)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)


def cmdline(p) -> str:
    try:
        return " ".join(p.cmdline()) + " " + p.name()
    except Exception:
        return ""


def alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
