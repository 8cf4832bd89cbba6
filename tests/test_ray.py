"""vLLM's Ray executor against a real one-node Ray cluster started on 127.0.0.1 by this test.
The cluster runs and is reachable at the address given. Where vLLM's platform runs the Ray
executor (a GPU host) the embedded model loads through it, streams and unloads; vLLM's CPU build
cannot ("current platform cpu does not support ray"): there the load is refused with that reason
in one line before anything is freed (the loaded engine stays). No Ray process is left."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
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
from vllm.platforms import current_platform  # noqa: E402

RAY_RUNS = bool(current_platform.ray_device_key)

RAY = str(Path(sys.executable).with_name("ray"))


def ray_processes() -> list:
    names = ("raylet", "gcs_server", "ray::", "/site-packages/ray/")
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
        if any(n in line for n in names) and p.pid != os.getpid() and _running(p):
            out.append(p)
    return out


@pytest.fixture
def cluster():
    """A one-node Ray cluster on 127.0.0.1 with 2 CPUs, checked reachable from a fresh process."""
    port = free_port()
    temp = Path("/tmp") / f"ray-{port}"   # Ray's socket paths must stay short
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                              "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                              f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    address = f"127.0.0.1:{port}"
    try:
        probe = subprocess.run([sys.executable, "-c", "import ray, json; ray.init(address=%r, log_to_driver=False); "
                                "print(json.dumps(ray.cluster_resources()))" % address],
                               capture_output=True, text=True, timeout=180, env=env)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert json.loads(probe.stdout.strip().splitlines()[-1])["CPU"] == 2.0
        yield address
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_cluster(temp: Path) -> None:
    """Stop this cluster's processes only: those whose command line names its temp dir, and their
    children (`ray stop` would stop every Ray on the host)."""
    own = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
    procs = list({c.pid: c for p in own for c in [p, *_children(p)]}.values())
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    deadline = time.monotonic() + 30
    while procs and time.monotonic() < deadline:
        procs = [p for p in procs if _running(p)]
        time.sleep(0.1)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
        _running(p)


def _running(p) -> bool:
    """Whether `p` still runs. A zombie runs nothing; one of ours is reaped (this process may be the
    subreaper that inherited Ray's daemons when `ray start` exited)."""
    try:
        if p.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(p.pid, os.WNOHANG)
    return False


def _children(p) -> list:
    try:
        return p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.skipif(RAY_RUNS, reason="this vLLM platform runs the Ray executor")
def test_vllm_cpu_refuses_the_ray_executor_in_one_line(cluster, session):
    before = session.engine
    with pytest.raises(VllamaError) as e:
        session.load(None, "vllm", distributed_executor_backend="ray", ray_address=cluster)
    line = str(e.value)
    assert "cannot run the Ray executor (vLLM: 'current platform cpu does not support ray')" in line, line
    assert "\n" not in line and session.engine is before   # refused before anything was freed


@pytest.mark.skipif(not RAY_RUNS, reason=f"vLLM's {current_platform.device_name} platform cannot run the Ray "
                                         "executor (a GPU host can)")
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


def test_no_ray_process_is_left():
    """After the cluster fixture has stopped its processes."""
    assert ray_processes() == []


def test_ray_options_are_checked():
    from vllama_jupyter.engines.vllm import Engine

    with pytest.raises(VllamaError, match="ray_address goes with distributed_executor_backend='ray'"):
        Engine.check(resolve(None, "vllm"), {"ray_address": "127.0.0.1:6379"})
    with pytest.raises(VllamaError, match="ray_address must be a cluster address"):
        Engine.check(resolve(None, "vllm"), {"ray_address": "", "distributed_executor_backend": "ray"})
