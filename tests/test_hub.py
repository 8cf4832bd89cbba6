"""Hub models through the real huggingface_hub, against a local server that answers the Hub's
tree and resolve endpoints (tests/hub_files.py): a plan from a GGUF's first bytes with nothing
downloaded, a download with one progress bar that the kernel's Interrupt stops and the next load
resumes, offline plans from the cache, and hostile files."""
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from benchmarks.models import chat_model
from vllama_jupyter.bench.kernel import Kernel, of_type, stream_text
from vllama_jupyter.models import EMBEDDED_DIR

from .conftest import ROOT
from .helpers import failed_line, needs_vllm, succeeded
from .hub_files import COMMIT, HubFiles

PLAN = """
import json, os, sys, vllama_jupyter as v
from vllama_jupyter.errors import VllamaError
engine = os.environ.get("PLAN_ENGINE", "llamacpp")
out = []
for model in sys.argv[1:]:
    try:
        p = v.fit(model, n_ctx=2048 if engine == "llamacpp" else 1024, engine=engine)
        out.append([p.weights, p.kv_per_token, p.trained, p.vocab if engine == "llamacpp" else p.block_size, p.fits, p.line()])
    except VllamaError as e:
        out.append(str(e))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The server, its repos (real GGUF files, a cut one, a text file, an HF folder) and an empty cache."""
    root = tmp_path_factory.mktemp("hub")
    files = {"acme/chat-GGUF/chat-Q4_K_M.gguf": chat_model(), "acme/tiny-GGUF/tiny-Q4_K_M.gguf": EMBEDDED_DIR / "model.gguf",
             **{f"acme/tiny/{p.name}": p for p in (EMBEDDED_DIR / "hf").iterdir()}}
    for name, src in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, root / name)
    data = chat_model().read_bytes()
    for name, part in (("acme/cut-GGUF/cut-header-Q4_K_M.gguf", data[:200_000]),
                       ("acme/cut-GGUF/cut-data-Q8_0.gguf", data[:20_000_000]),
                       ("acme/text-GGUF/notes-Q4_K_M.gguf", b"not a model\n" * 1000)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(part)
    server = HubFiles(root)
    yield server
    server.close()


def env(server, cache, **more) -> dict:
    return {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1", **more}


def plans(server, cache, *models, **more) -> list:
    """What v.fit says of each model, in a fresh interpreter that sees the server as the Hub."""
    r = _run(PLAN, models, env(server, cache, **more))
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def needed(line: str) -> str:
    """A plan's line up to the free memory (which moves between two plans)."""
    return line.split(" free ")[0].rsplit(" of ", 1)[0]


def _run(code, args, environment):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **environment}, cwd=ROOT)


def test_a_hub_model_is_planned_from_its_first_bytes_and_nothing_is_downloaded(hub, tmp_path):
    hub.requests.clear()
    remote, local = plans(hub, tmp_path / "cache", "acme/chat-GGUF", str(chat_model()))
    assert remote[:5] == local[:5]
    assert needed(remote[5]).replace("acme/chat-GGUF", chat_model().name) == needed(local[5])
    size = chat_model().stat().st_size
    ranges = [r for m, p, r in hub.requests if m == "GET" and "/resolve/" in p]
    assert len(ranges) >= 2 and all(r and r.startswith("bytes=") for r in ranges), ranges   # the doubling reads ran
    assert hub.sent("chat-Q4_K_M.gguf") < size / 4, (hub.sent("chat-Q4_K_M.gguf"), size)
    assert not list((tmp_path / "cache").rglob("blobs/*")), "a plan downloaded a file"


def test_hostile_hub_files_are_one_line_each(hub, tmp_path):
    out = plans(hub, tmp_path / "cache", "acme/cut-GGUF:cut-header", "acme/cut-GGUF:cut-data", "acme/text-GGUF",
                "acme/absent-GGUF", "acme/tiny", "acme/tiny-GGUF:Q2_K")
    assert all(isinstance(x, str) and "\n" not in x for x in out), out
    assert "acme/cut-GGUF/cut-header-Q4_K_M.gguf is not a valid GGUF file" in out[0]
    assert "its tensors need 45," in out[1] and "the file has 20,000,000" in out[1]
    assert "acme/text-GGUF/notes-Q4_K_M.gguf is not a valid GGUF file" in out[2]
    assert "model 'acme/absent-GGUF' was not found on the Hugging Face Hub" in out[3]
    assert "acme/tiny has no GGUF file" in out[4]
    assert "no GGUF file in acme/tiny-GGUF matches 'Q2_K'" in out[5]
    assert not list((tmp_path / "cache").rglob("blobs/*"))


def test_offline_a_plan_comes_from_the_cache_or_says_it_needs_the_hub(hub, tmp_path):
    cache = tmp_path / "cache"
    gone, = plans(hub, cache, "acme/tiny-GGUF", HF_HUB_OFFLINE="1")
    assert "acme/tiny-GGUF is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in gone
    r = _run("import vllama_jupyter as v; v.load('acme/tiny-GGUF')", [], env(hub, cache))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"downloaded acme/tiny-GGUF (6.1 MiB) to {cache}/models--acme--tiny-GGUF/snapshots/{COMMIT}" in r.stderr
    hub.requests.clear()
    cached, local = plans(hub, cache, "acme/tiny-GGUF", str(EMBEDDED_DIR / "model.gguf"), HF_HUB_OFFLINE="1")
    assert cached[:5] == local[:5] and not hub.requests
    cached, = plans(hub, cache, "acme/tiny-GGUF")   # online too, a model in the cache is planned from it
    assert cached[:5] == local[:5] and not hub.requests, hub.requests
    r = _run("from IPython.testing.globalipapp import start_ipython; ip = start_ipython(); "
             "ip.run_line_magic('load_ext', 'vllama_jupyter'); ip.run_line_magic('vllama', 'models')", [], env(hub, cache))
    assert "acme/tiny-GGUF  [HF cache; gguf] · 6.1 MiB: fits, up to " in r.stdout, r.stdout + r.stderr[-2000:]
    assert not hub.requests, hub.requests


def test_an_hf_folder_downloads_without_the_weights_vllm_does_not_read(hub, tmp_path):
    code = ("from vllama_jupyter.models import resolve; import json; r = resolve('acme/tiny', 'vllm'); "
            "print(json.dumps(sorted(p.name for p in r.path.iterdir())))")
    r = _run(code, [], env(hub, tmp_path / "cache"))
    assert r.returncode == 0, r.stderr[-2000:]
    names = json.loads(r.stdout.strip().splitlines()[-1])
    assert "config.json" in names and not [n for n in names if n.endswith(".gguf")], names


@needs_vllm
@pytest.mark.vllm
def test_a_vllm_plan_of_a_hub_model_fetches_its_config_only(hub, tmp_path):
    hub.requests.clear()
    remote, local = plans(hub, tmp_path / "cache", "acme/tiny", str(EMBEDDED_DIR / "hf"), PLAN_ENGINE="vllm")
    assert remote[:5] == local[:5], (remote, local)
    fetched = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert fetched == ["/acme/tiny/resolve/main/config.json"], fetched


def test_a_download_shows_one_bar_stops_on_interrupt_and_resumes(hub, tmp_path):
    cache = tmp_path / "cache"
    kernel = Kernel(extra_env=env(hub, cache))
    try:
        succeeded(kernel.execute("%load_ext vllama_jupyter\n%vllama load embedded --engine llamacpp"))
        hub.rate, hub.requests[:] = 8e6, []
        start = hub.streamed

        def interrupt():
            deadline = time.monotonic() + 60
            while hub.streamed - start < 4_000_000 and time.monotonic() < deadline:
                time.sleep(0.02)
            kernel.km.interrupt_kernel()
        t = threading.Thread(target=interrupt)
        t.start()
        msgs = kernel.execute("%vllama load acme/chat-GGUF")
        t.join()
        line = failed_line(msgs)
        partials = list(cache.rglob("*.partial"))
        assert len(partials) == 1, line
        held = partials[0].stat().st_size
        size = chat_model().stat().st_size
        assert 0 < held < size and held % (1 << 20) == 0, held
        assert line.startswith("VllamaError: the download of acme/chat-GGUF stopped at ") and "of 43.4 MiB" in line
        assert f"stays in {partials[0]}; load it again to resume" in line
        bars = [m for m in of_type(msgs, "display_data") if "downloading acme/chat-GGUF" in
                m["content"]["data"].get("text/plain", "")]
        assert len(bars) == 1, [m["content"] for m in of_type(msgs, "display_data")]   # one bar, a widget
        texts = [json.dumps(m["content"]["data"]) for m in of_type(msgs, "comm_msg")]
        assert any("MB/s" in x and "/43.4M" in x for x in texts), texts[-5:]   # bytes, rate and time left
        assert "tiny-shakespeare" in stream_text(succeeded(kernel.execute("%vllama status")))   # the engine stayed

        hub.rate = None
        msgs = succeeded(kernel.execute("%vllama load acme/chat-GGUF"))
        assert ("GET", "/acme/chat-GGUF/resolve/main/chat-Q4_K_M.gguf", f"bytes={held}-") in hub.requests
        assert f"downloaded acme/chat-GGUF (43.4 MiB) to {cache}/models--acme--chat-GGUF/snapshots/{COMMIT}" \
            in stream_text(msgs, "stderr")
        blob = next((cache / "models--acme--chat-GGUF" / "blobs").glob("[0-9a-f]" * 64))
        assert hashlib.sha256(blob.read_bytes()).digest() == hashlib.sha256(chat_model().read_bytes()).digest()
        assert not list(cache.rglob("*.partial"))
        assert "acme/chat-GGUF" in stream_text(succeeded(kernel.execute("%vllama status")))
    finally:
        hub.rate = None
        kernel.stop()
