"""llama.cpp's OpenMP threads bound one per core. Unbound, a thread woken for a request after a
pause could land on the core its partner was busy on and wait out a scheduler tick (~10 ms on
a short request, every second request or so here). libgomp binds its threads itself when
OMP_PROC_BIND is set as it loads; it also binds the thread that loads it, so that thread's CPUs
are given back at once, and the variables leave the environment again (servers started later
do not inherit them). A user's own OMP_PROC_BIND, OMP_PLACES or GOMP_CPU_AFFINITY is left to
libgomp: OMP_PROC_BIND=false keeps the threads unbound."""
from __future__ import annotations

import ctypes
import os
import sys

BIND = {"OMP_PROC_BIND": "spread", "OMP_PLACES": "cores"}
USER = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY")
_done = False


def prepare() -> None:
    """Load libgomp with its threads bound, once, before llama_cpp loads it (Linux only)."""
    global _done
    if _done:
        return
    _done = True
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER) or _loaded():
        return
    cpus = os.sched_getaffinity(0)
    os.environ.update(BIND)
    try:
        ctypes.CDLL("libgomp.so.1")   # reads OMP_* now, and only now
    except OSError:
        pass   # llama.cpp built without OpenMP
    finally:
        for k in BIND:
            os.environ.pop(k, None)
        os.sched_setaffinity(0, cpus)


def _loaded() -> bool:
    """Whether libgomp is in the process already (too late to bind its threads)."""
    try:
        with open("/proc/self/maps") as f:
            return "/libgomp.so" in f.read()
    except OSError:
        return True
