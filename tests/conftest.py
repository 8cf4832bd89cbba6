import os
import subprocess
import sys

import pytest

from vllama_jupyter.session import Session, get_session

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


@pytest.fixture(scope="session")
def vllm_session():
    """`get(model, **options)`: a session of its own with `model` (None: the embedded one) on vLLM.
    One engine start per model serves every module that asks (a start is ~60 s here); a test that
    unloaded it gets it loaded again. All are closed at the end of the run."""
    made: dict = {}

    def get(model=None, **options) -> Session:
        key = (model, tuple(sorted(options.items())))
        s = made.setdefault(key, Session())
        if s.engine is None:
            s.load(model, "vllm", **options)
        return s
    yield get
    for s in made.values():
        s._shutdown()



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
