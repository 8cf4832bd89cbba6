"""Modular's MAX as a managed server: `%vllama serve max` in a real kernel on the embedded model
(its float32 copy), streamed, counted, stopped; the server dies with a killed kernel; MAX missing
gives one line. The first start in a fresh cache compiles the model (minutes on a CPU); the
compile cache ($MODULAR_CACHE_DIR, set by conftest.py) keeps later starts to ~15 s."""
import os
import subprocess
import sys
import sysconfig

import httpx
import psutil
import pytest

from vllama_jupyter import Sampling, max_server
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.bench.kernel import Kernel, of_type, stream_text

from .helpers import succeeded, wait_gone

def _max_missing() -> str | None:
    try:
        max_server.command()
    except VllamaError as e:
        return str(e)
    return None


needs_max = pytest.mark.skipif(_max_missing() is not None, reason="MAX is not installed (scripts/setup.sh puts it in .venv-max)")
SERVER = "__import__('vllama_jupyter').session.get_session().servers[0]"


def tree(pid: int) -> list[int]:
    p = psutil.Process(pid)
    return [pid] + [c.pid for c in p.children(recursive=True)]


@pytest.mark.slow
@pytest.mark.timeout(1500)   # a fresh compile cache: MAX compiles for minutes first
@needs_max
def test_serve_max_streams_a_greedy_cell_and_unload_leaves_no_process(session):
    """The embedded model served by MAX on CPU: a %%vllama cell streams through it with TTFT, token
    counts and the stats line; /models gives the context; the usage counts are the engine's; the
    text is the in-process llama.cpp engine's; unload stops MAX and every process it started."""
    expected = session.engine.generate("ROMEO:\n", Sampling(max_tokens=8, temperature=0.0)).text
    k = Kernel()
    try:
        k.execute("%load_ext vllama_jupyter")
        out = succeeded(k.execute("%vllama serve max", timeout=1200))
        assert "max server for tiny-shakespeare at http://127.0.0.1:" in stream_text(out)
        url, pid = k.value(f"({SERVER}.url, {SERVER}.proc.pid)")
        procs = tree(pid)
        assert len(procs) >= 3   # MAX's API server, its model worker and its metrics worker
        models = httpx.get(f"{url}/models", timeout=5).json()["data"]
        assert [(m["id"], m["max_model_len"]) for m in models] == [("tiny-shakespeare", 1024)]

        status = stream_text(succeeded(k.execute("%vllama status")))
        assert "engine: openai MAX on CPU (a server this kernel started)" in status, status
        assert "context 1024 tokens" in status

        msgs = succeeded(k.execute("%%vllama -t 0 --max-tokens 24 -o r\nROMEO:\n", timeout=120))
        updates = of_type(msgs, "update_display_data")
        assert updates and updates[-1]["content"]["data"]["text/plain"] == k.value("r.text")
        stats = stream_text(msgs)
        assert "24 tokens" in stats and "TTFT" in stats and "tokens/s" in stats, stats
        r = k.value("(r.output_tokens, r.prompt_tokens, r.ttft > 0, r.text)")
        assert list(r[:3]) == [24, 4, True]     # BOS + 3 prompt tokens, as llama.cpp counts them
        assert r[3].startswith(expected)    # float32 MAX and float16 llama.cpp: the same greedy start

        succeeded(k.execute("%vllama unload"))
        assert all(wait_gone(p, 30) for p in procs), [p for p in procs if psutil.pid_exists(p)]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/models", timeout=2)
    finally:
        k.stop()


@pytest.mark.slow
@pytest.mark.timeout(1500)
@needs_max
def test_max_dies_with_a_sigkilled_kernel():
    k = Kernel()
    try:
        succeeded(k.execute("%load_ext vllama_jupyter\n%vllama serve max --no-load", timeout=1200))
        pid = k.value(f"{SERVER}.proc.pid")
        procs = tree(pid)
        os.kill(k.value("__import__('os').getpid()"), 9)
        assert all(wait_gone(p, 60) for p in procs), [p for p in procs if psutil.pid_exists(p)]
    finally:
        k.stop()


def test_max_not_installed_is_one_line(tmp_path):
    """A Python with no `max` beside it and none on PATH: serve('max') says how to install MAX."""
    base = tmp_path / "bin"
    base.mkdir()
    (base / "python").symlink_to(os.path.realpath(sys.executable))   # the interpreter, outside the venv
    code = ("import site, sys; site.addsitedir(sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
            "from vllama_jupyter.errors import VllamaError\nfrom vllama_jupyter import servers\n"
            "try:\n    servers.make('max')\nexcept VllamaError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "VLLAMA_MAX"}
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run([str(base / "python"), "-c", code, sysconfig.get_paths()["purelib"],
                          os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == ("MAX is not installed: pip install 'vllama-jupyter[max]' (or install max[serve] "
                                  "in a virtual environment of its own and set VLLAMA_MAX to its bin/max)"), out


def test_max_is_asked_for_never_chosen():
    from vllama_jupyter.engines import selection
    from vllama_jupyter.errors import VllamaError
    from vllama_jupyter.hardware import GPU, Hardware

    gpu = Hardware("linux", "x86_64", ("avx2",), 16, 2**37, gpus=(GPU("NVIDIA H100", 80 * 2**30),), gpu_source="NVML")
    for hw in (gpu, Hardware("linux", "x86_64", ("avx2",), 2, 2**34)):
        assert selection.choose(hw, installed=("llamacpp", "vllm", "openai")).engine != "max"
    with pytest.raises(VllamaError, match=r"MAX runs as a server here: %vllama serve max \[MODEL\]"):
        selection.choose(gpu, installed=("llamacpp", "vllm", "openai"), override="max")
