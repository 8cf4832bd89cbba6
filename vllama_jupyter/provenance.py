"""What identifies a model and a run: the SHA-256 of a model's files (computed once per file
version in a background thread and cached on disk by path, size and mtime), the Hugging Face
revision of hub models, and a one-line hardware summary for the record of each output."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_lock = threading.Lock()
_jobs: dict[str, threading.Thread] = {}
_memo: dict[tuple, str] = {}


def cache_file() -> Path:
    """sha256.json in the cache folder (models.cache_dir)."""
    from .models import cache_dir

    return cache_dir() / "sha256.json"


def _key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: tuple, digest: str) -> None:
    with _lock:
        data = _read_cache()
        data[key[0]] = [key[1], key[2], digest]
        f = cache_file()
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(f)
        except OSError:
            pass  # a read-only home only costs hashing again


def file_sha256(path: Path) -> str:
    """The file's SHA-256, hashed once per (path, size, mtime)."""
    key = _key(path)
    if key in _memo:
        return _memo[key]
    cached = _read_cache().get(key[0])
    if isinstance(cached, list) and cached[:2] == [key[1], key[2]]:
        _memo[key] = cached[2]
        return cached[2]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    _memo[key] = digest = h.hexdigest()
    _write_cache(key, digest)
    return digest


def folder_sha256(folder: Path) -> str:
    """One SHA-256 over a model folder: the sorted names and SHA-256s of its files."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.relative_to(folder).as_posix()} {file_sha256(f)}\n".encode())
    return h.hexdigest()


def hub_revision(path: Path) -> str | None:
    """The commit of a model in the Hugging Face cache (…/models--org--name/snapshots/<commit>/…)."""
    parts = path.resolve().parts if path.exists() else path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and i > 0 and parts[i - 1].startswith("models--"):
            return parts[i + 1]
    return None


def _identity(path: Path) -> dict:
    rev = hub_revision(path)
    if rev:
        return {"model_revision": rev}
    try:
        digest = folder_sha256(path) if path.is_dir() else file_sha256(path)
    except OSError as e:
        return {"model_sha256": None, "model_sha256_error": type(e).__name__}
    return {"model_sha256": digest}


PENDING = "pending"        # the record's model_sha256 while a large model is still being hashed
WAIT_BYTES = 64 * 2**20   # a model this small is hashed on the spot (milliseconds); a larger one never holds a cell


def _low_priority() -> None:
    try:   # Linux: the priority of this thread only
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def _background(path: Path) -> None:
    _low_priority()
    _identity(path)


def prefetch(path: Path) -> None:
    """Start hashing `path` in a low-priority background thread (a model just loaded)."""
    key = str(path)
    with _lock:
        if key in _jobs and _jobs[key].is_alive():
            return
        t = _jobs[key] = threading.Thread(target=_background, args=(path,), name="vllama-sha256", daemon=True)
    t.start()


def _size(path: Path) -> int:
    try:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    except OSError:
        return 0


def identity(path: Path, wait: bool = True) -> dict:
    """{'model_revision': commit} for hub models, else {'model_sha256': hex}. A background hash of
    the same path still running is waited for, except with wait=False for a model over
    WAIT_BYTES: then {'model_sha256': 'pending'} (the hash is cached for the next record)."""
    job = _jobs.get(str(path))
    if job is not None and job.is_alive():
        if not wait and hub_revision(path) is None and _size(path) > WAIT_BYTES:
            return {"model_sha256": PENDING}
        job.join()
    return _identity(path)


def hardware_line() -> str:
    from .hardware import hardware

    hw = hardware()
    gpus = ", ".join(getattr(g, "name", str(g)) for g in hw.gpus) or "no GPU"
    return f"{hw.os} {hw.arch}, {hw.cores} cores, {hw.ram_bytes / 2**30:.0f} GiB RAM, {gpus}"
