"""Model identity for the records: SHA-256 cached by path, size and mtime; hub revisions."""
import hashlib
import json
import os

from vllama_jupyter import provenance


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLAMA_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights" * 1000)
    want = hashlib.sha256(model.read_bytes()).hexdigest()
    provenance.prefetch(model)
    assert provenance.identity(model) == {"model_sha256": want}
    cached = json.loads(provenance.cache_file().read_text())
    assert cached[str(model.resolve())][2] == want
    # a changed file (new size and mtime) is hashed again, not taken from the cache
    model.write_bytes(b"other" * 1000)
    os.utime(model, ns=(1, 1))
    assert provenance.identity(model) == {"model_sha256": hashlib.sha256(model.read_bytes()).hexdigest()}


def test_a_cached_digest_is_reused_without_reading_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLAMA_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"abc")
    st = model.stat()
    provenance.cache_file().parent.mkdir(parents=True)
    provenance.cache_file().write_text(json.dumps({str(model.resolve()): [st.st_size, st.st_mtime_ns, "f" * 64]}))
    provenance._memo.clear()
    assert provenance.identity(model) == {"model_sha256": "f" * 64}


def test_hub_models_are_identified_by_revision(tmp_path):
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct-GGUF" / "snapshots" / "9217f5db79a29953eb74d5343926648285ec7e67"
    snap.mkdir(parents=True)
    (snap / "model.gguf").write_bytes(b"x")
    assert provenance.identity(snap / "model.gguf") == {"model_revision": "9217f5db79a29953eb74d5343926648285ec7e67"}
    assert provenance.identity(snap) == {"model_revision": "9217f5db79a29953eb74d5343926648285ec7e67"}


def test_a_model_folder_has_one_digest_over_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLAMA_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    first = provenance.identity(folder)["model_sha256"]
    (folder / "model.safetensors").write_bytes(b"v" * 100)
    assert provenance.identity(folder)["model_sha256"] != first


def test_the_cache_lives_in_vllama_cache_else_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLAMA_CACHE", str(tmp_path / "mine"))
    assert provenance.cache_file() == tmp_path / "mine" / "sha256.json"
    monkeypatch.delenv("VLLAMA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert provenance.cache_file() == tmp_path / "xdg" / "vllama-jupyter" / "sha256.json"


def test_a_large_model_still_being_hashed_is_pending_and_the_cell_does_not_wait(tmp_path, monkeypatch):
    """A FIFO keeps the background hash running until the test writes to it."""
    monkeypatch.setenv("VLLAMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(provenance, "WAIT_BYTES", -1)   # every model counts as large
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    provenance.prefetch(fifo)
    assert provenance.identity(fifo, wait=False) == {"model_sha256": "pending"}
    with open(fifo, "wb") as w:
        w.write(b"weights")
    provenance._jobs[str(fifo)].join(10)
    assert not provenance._jobs[str(fifo)].is_alive()


def test_loading_a_model_starts_its_hash(session):
    session.load(None, "llamacpp")
    assert str(session.engine.ref.path) in provenance._jobs
    from vllama_jupyter import Sampling

    assert len(session.engine.provenance(Sampling())["model_sha256"]) == 64   # small: hashed on the spot
