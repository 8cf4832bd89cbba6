import os
import subprocess
import sys

import pytest

from vllama_jupyter.session import get_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def session():
    """The process's one session with the embedded model on llama.cpp, loaded only when another
    test left something else (one engine is shared by the tests)."""
    s = get_session()
    if (s.engine is None or s.choice.engine != "llamacpp" or s.ref.source != "embedded"
            or s.engine.llm.n_ctx() != 1024):
        s.load(None, "llamacpp")
    return s


@pytest.fixture
def engine(session):
    return session.engine


def run_python(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (for import checks, RSS and environment-dependent paths)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=e, cwd=ROOT)


@pytest.fixture(scope="module")
def kernel():
    """A real IPython kernel (jupyter_client) with the extension loaded, one per test module."""
    from vllama_jupyter.bench.kernel import Kernel

    k = Kernel()
    k.execute("%load_ext vllama_jupyter")
    yield k
    k.stop()
