"""One engine for many notebooks, with two (and three) real kernels: kernel A shares its engine,
kernel B finds it and streams from it without loading the model, and the lifetime rules hold."""
import json
import os
import stat
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from vllama_jupyter.bench.kernel import Kernel, stream_text

from .helpers import failed_line, succeeded

pytestmark = pytest.mark.slow
GREEDY = "%%vllama -t 0 --max-tokens 40 -o r\nROMEO:\n"


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A Jupyter runtime directory of its own, so no other kernel finds these shares."""
    d = tmp_path / "runtime"
    d.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(d))
    return d


def kernel(runtime, **env) -> Kernel:
    k = Kernel(extra_env={"JUPYTER_RUNTIME_DIR": str(runtime), "VLLAMA_SHARED": "1", **env})
    k.execute("%load_ext vllama_jupyter")
    return k


def rss(k: Kernel) -> int:
    return psutil.Process(k.value("__import__('os').getpid()")).memory_info().rss


def share_file(runtime: Path) -> tuple[Path, dict]:
    files = list(runtime.glob("vllama-shared-*.json"))
    assert len(files) == 1, files
    return files[0], json.loads(files[0].read_text())


def test_two_kernels_share_one_engine(runtime):
    a, b = kernel(runtime), kernel(runtime)
    try:
        assert a.execute("%vllama load embedded --engine llamacpp").status == "ok"
        shared = a.execute("%vllama share")
        assert shared.status == "ok" and "sharing llamacpp · tiny-shakespeare at http://127.0.0.1:" in stream_text(shared)
        path, info = share_file(runtime)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert info["pid"] == a.value("__import__('os').getpid()") and info["url"].startswith("http://127.0.0.1:")

        # the token is required; the socket listens on 127.0.0.1 only
        assert httpx.get(info["url"] + "/models", timeout=10).status_code == 401
        assert httpx.get(info["url"] + "/models", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        ok = httpx.get(info["url"] + "/models", headers={"Authorization": f"Bearer {info['token']}"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "tiny-shakespeare"
        port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
        listening = [c.laddr for c in psutil.Process(info["pid"]).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert [addr.ip for addr in listening] == ["127.0.0.1"]

        # B names no model: it uses A's engine and loads nothing itself
        assert a.execute(GREEDY).status == "ok"
        assert b.execute(GREEDY).status == "ok"
        assert b.value("r.text") == a.value("r.text") and b.value("r.engine") == "openai"
        status = stream_text(b.execute("%vllama status"))
        assert "using the shared llama.cpp engine with model tiny-shakespeare, started by another notebook" in status
        assert b.value("'llama_cpp' in __import__('sys').modules") is False
        model_bytes = a.value("__import__('vllama_jupyter').status()['model_bytes']")
        assert rss(b) < rss(a) - model_bytes, (rss(b), rss(a), model_bytes)
        assert "shared at http://127.0.0.1:" in stream_text(a.execute("%vllama status"))
        assert "with 1 other kernel" in stream_text(a.execute("%vllama status"))
        bar = "__import__('vllama_jupyter.labstatus').labstatus.status_message(__import__('vllama_jupyter').get_session())"
        assert a.value(bar)["shared"] == "shared with 1 kernel" and b.value(bar)["shared"] == "shared by another notebook"
        # a script-style client in B: vllama_jupyter.client() is an openai.OpenAI on A's share
        assert b.value("__import__('vllama_jupyter').client().completions.create(model='tiny-shakespeare', "
                       "prompt='ROMEO:', max_tokens=3).usage.completion_tokens") == 3

        # both at once: they decode together (or in turn where one ends before the other comes), the
        # same greedy tokens either way, neither fails
        cell = "%%vllama -t 0 --max-tokens 200 --ignore-eos -o both\nROMEO:\n"
        done = {}
        threads = [threading.Thread(target=lambda k=k, n=n: done.__setitem__(n, k.execute(cell).status))
                   for n, k in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert done == {"a": "ok", "b": "ok"}
        assert a.value("both.text") == b.value("both.text") and b.value("both.output_tokens") == 200

        # A unloads: B gets one clear line, then loads its own
        a.execute("%vllama unload")
        assert not path.exists()
        line = failed_line(b.execute(GREEDY))
        assert "the shared engine of another notebook" in line and "has stopped" in line
        succeeded(b.execute(GREEDY))
        assert b.value("r.engine") == "llamacpp"
    finally:
        a.stop()
        b.stop()


def test_opting_out_and_naming_a_model_load_in_process(runtime):
    a = kernel(runtime)
    off = kernel(runtime, VLLAMA_SHARED="0")
    named = kernel(runtime)
    try:
        a.execute("%vllama load embedded --engine llamacpp\n%vllama share")
        assert off.execute(GREEDY).status == "ok" and off.value("r.engine") == "llamacpp"
        assert named.execute("%%vllama -m embedded -t 0 --max-tokens 5 -o r\nROMEO:").status == "ok"
        assert named.value("r.engine") == "llamacpp"
        assert a.value("__import__('vllama_jupyter').status()['shared']['clients']") == 0
    finally:
        for k in (a, off, named):
            k.stop()


def test_idle_timeout_and_killed_owner(runtime):
    from vllama_jupyter.sharing import live_shares

    a = kernel(runtime)
    try:
        a.execute("%vllama load embedded --engine llamacpp\n%vllama share --idle-timeout 2")
        path, _ = share_file(runtime)
        deadline = time.monotonic() + 30
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not path.exists()
        assert "shared" not in a.value("__import__('vllama_jupyter').status()")
        a.execute("%vllama share")
        path, info = share_file(runtime)
        os.kill(info["pid"], 9)   # the owner dies without cleaning up
        psutil.Process(info["pid"]).wait(30) if psutil.pid_exists(info["pid"]) else None
    finally:
        a.stop()
    assert path.exists()
    (runtime / "vllama-shared-garbage.json").write_text("{not json")
    assert live_shares() == []
    assert not path.exists()   # a dead kernel's file is removed


def test_share_refuses_what_it_cannot_share(runtime):
    a = kernel(runtime)
    try:
        assert "--idle-timeout: invalid float value" in failed_line(a.execute("%vllama share --idle-timeout soon"))
        line = failed_line(a.execute("import vllama_jupyter as v; v.share(idle_timeout=-1)"))
        assert "idle_timeout must be a positive number" in line
        assert "no shared engine is running" in failed_line(a.execute("v.client()"))
        assert "port must be a whole number from 1024 to 65535" in failed_line(a.execute("%vllama share --port 80"))
        assert "--port: invalid int value" in failed_line(a.execute("%vllama share --port http"))
        a.execute("%vllama serve llamacpp")
        assert "share the engine in the notebook that has it loaded" in failed_line(a.execute("%vllama share"))
    finally:
        a.stop()


def test_hostile_requests_to_a_shared_engine(runtime):
    a = kernel(runtime)
    try:
        a.execute("%vllama load embedded --engine llamacpp\n%vllama share")
        _, info = share_file(runtime)
        auth = {"Authorization": f"Bearer {info['token']}"}
        post = lambda path, **kw: httpx.post(info["url"].removesuffix("/v1") + path, headers=auth, timeout=30, **kw)  # noqa: E731
        assert post("/v1/completions", content=b"{not json").status_code == 400
        assert post("/v1/completions", json=[1, 2]).status_code == 400
        r = post("/v1/completions", json={"prompt": 5})
        assert r.status_code == 400 and "the prompt must be text" in r.json()["error"]["message"]
        r = post("/v1/completions", json={"prompt": "x", "temperature": 9})
        assert r.status_code == 400 and "temperature must be between 0 and 2" in r.json()["error"]["message"]
        assert post("/v1/frobnicate", json={}).status_code == 404
        r = post("/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 5, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
        # the engine is unharmed
        assert a.execute(GREEDY).status == "ok"
    finally:
        a.stop()


def test_a_killed_owner_fails_one_client_cell_then_the_client_loads_its_own(runtime):
    """The owner is SIGKILLed (and not yet reaped: a zombie): the client's next cell fails with
    one line, and the cell after loads a model in the client's kernel."""
    a, b = kernel(runtime), kernel(runtime)
    try:
        assert a.execute("%vllama load embedded --engine llamacpp\n%vllama share").status == "ok"
        assert b.execute(GREEDY).status == "ok" and b.value("r.engine") == "openai"
        pid = a.value("__import__('os').getpid()")
        os.kill(pid, 9)
        deadline = time.monotonic() + 30   # until the kill has landed (a zombie: its parent has not reaped it)
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        line = failed_line(b.execute(GREEDY))
        assert "the shared engine of another notebook" in line and ("has stopped" in line or "stopped answering" in line)
        succeeded(b.execute(GREEDY))
        assert b.value("r.engine") == "llamacpp"
    finally:
        a.stop()
        b.stop()


def client_streams_from_owner(a: Kernel, b: Kernel) -> tuple[threading.Thread, dict]:
    """A shares llama.cpp; B starts a long stream from it (in a thread). Returns once A serves it;
    done["b"] is B's cell when it ends."""
    assert a.execute("%vllama load embedded --engine llamacpp --n-ctx 8192\n%vllama share").status == "ok"
    assert b.execute(GREEDY).status == "ok" and b.value("r.engine") == "openai"
    done: dict = {}
    t = threading.Thread(target=lambda: done.setdefault(
        "b", b.execute("%%vllama -t 0 --max-tokens 8000 --ignore-eos -o long\nROMEO:\n")))
    t.start()
    deadline = time.monotonic() + 60
    while a.value("__import__('vllama_jupyter').status()['state']") != "serving" and time.monotonic() < deadline:
        time.sleep(0.05)
    return t, done


@pytest.mark.parametrize("action, said", [("%vllama unload", "unloaded"),
                                          ("%vllama load embedded --engine llamacpp --n-ctx 2048", "llamacpp")])
def test_the_owner_unloads_or_reloads_while_a_client_streams(runtime, action, said):
    """The owner's unload or reload is not refused as busy: the client's request ends at its next
    token with one line, the owner's action goes through, and the client's next cell loads its own model."""
    a, b = kernel(runtime), kernel(runtime)
    try:
        t, done = client_streams_from_owner(a, b)
        done_by_owner = a.execute(action)
        assert done_by_owner.status == "ok" and said in stream_text(done_by_owner)
        t.join(120)
        line = failed_line(done["b"])
        assert "unloaded or reloaded it: this request was stopped" in line, line
        succeeded(b.execute(GREEDY))
        assert b.value("r.engine") == "llamacpp"
    finally:
        a.stop()
        b.stop()


def test_the_owner_is_killed_while_a_client_streams(runtime):
    """SIGKILL of the owner mid-stream: the client's cell fails with one line (it does not hang),
    and its next cell loads a model of its own."""
    a, b = kernel(runtime), kernel(runtime)
    try:
        t, done = client_streams_from_owner(a, b)
        os.kill(a.value("__import__('os').getpid()"), 9)
        t.join(120)   # a guard against a hang, not a measure
        assert not t.is_alive(), "the client's cell did not end when the owner was killed"
        line = failed_line(done["b"])
        assert "the connection to" in line or "the shared engine of another notebook" in line, line
        succeeded(b.execute(GREEDY))
        assert b.value("r.engine") == "llamacpp"
    finally:
        a.stop()
        b.stop()
