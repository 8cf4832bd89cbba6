"""vLLM's Ray executor against a real one-node Ray cluster started on 127.0.0.1 by this test:
the embedded model loads through it (vLLM's CPU build here), streams, and unloads; then the
cluster stops and no process of it is left."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from vllama_jupyter import Sampling
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.models import resolve
from vllama_jupyter.servers import free_port

pytest.importorskip("vllm", reason="vLLM is not installed")
pytest.importorskip("ray", reason="Ray is not installed (pip install 'vllama-jupyter[ray]')")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))


def ray_processes() -> list:
    names = ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor", "monitor.py")
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
        if any(n in line for n in names) and p.pid != os.getpid():
            out.append(p)
    return out


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    temp = Path("/tmp") / f"ray-{port}"   # Ray's socket paths must stay short
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                              "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                              f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


def test_vllm_through_a_ray_cluster(cluster):
    from vllama_jupyter.engines.vllm import Engine

    eng = Engine()
    try:
        eng.load(resolve(None, "vllm"), distributed_executor_backend="ray", ray_address=cluster)
        stream = eng.stream("ROMEO:\n", Sampling(max_tokens=24, temperature=0.0))
        deltas = list(stream)
        assert stream.result.output_tokens == 24 and "".join(d.text for d in deltas) == stream.result.text
        assert eng.settings()["distributed_executor_backend"] == "ray"
    finally:
        eng.close()
    assert not [c for c in psutil.Process().children(recursive=True) if c.is_running()
                and c.status() != psutil.STATUS_ZOMBIE]


def test_ray_options_are_checked():
    from vllama_jupyter.engines.vllm import Engine

    with pytest.raises(VllamaError, match="ray_address goes with distributed_executor_backend='ray'"):
        Engine.check(resolve(None, "vllm"), {"ray_address": "127.0.0.1:6379"})
    with pytest.raises(VllamaError, match="ray_address must be a cluster address"):
        Engine.check(resolve(None, "vllm"), {"ray_address": "", "distributed_executor_backend": "ray"})
