"""Models on the Hugging Face Hub: a repo's files and their sizes, the file's first bytes before
anything is downloaded (ranged reads), and downloads a person can watch and stop.

A download shows one progress bar (bytes, rate, time left) for all the files it fetches. The
kernel's Interrupt stops it and keeps the part downloaded in the Hugging Face cache; the next
load resumes from there (HTTP ranges). huggingface_hub itself throws a partial file away, so the
transfer is ours, into the cache's blob, and huggingface_hub then links the finished blob into
the snapshot as if it had fetched it."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import VllamaError, notice
from .sizes import size_text

CHUNK = 1 << 20             # a download's bar moves, and an interrupt keeps what came, per MiB


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def speaking(repo: str):
    """What the Hub or the cache says of `repo` as one line each: not found, not cached, unreachable."""
    from huggingface_hub import errors
    try:
        from httpx2 import TransportError   # the HTTP client of huggingface_hub 2
    except ImportError:
        from httpx import TransportError

    try:
        yield
    except errors.RepositoryNotFoundError:
        raise VllamaError(f"model {repo!r} was not found on the Hugging Face Hub (check the id; for gated "
                          "models log in with `hf auth login`)") from None
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hub could not be reached"
        raise VllamaError(f"{repo} is not in the local Hugging Face cache and {why}: download it once "
                          "with network access (or unset HF_HUB_OFFLINE)") from None
    except TransportError as e:
        raise VllamaError(f"the Hugging Face Hub could not be reached for {repo} ({str(e).splitlines()[0]}): check "
                          "the network, or set HF_HUB_OFFLINE=1 to use the models in the local cache") from None
    except (errors.HfHubHTTPError, OSError) as e:
        raise VllamaError(f"could not fetch {repo} from the Hugging Face Hub: {str(e).splitlines()[0]}") from None


def listing(repo: str, cache_dir: str | None, local: bool = False) -> dict[str, int]:
    """The repo's files and their sizes in bytes: from the Hub, or (local, HF_HUB_OFFLINE) the local cache."""
    import huggingface_hub as hf

    if local or offline():
        snap = Path(hf.snapshot_download(repo, cache_dir=cache_dir, local_files_only=True))
        return {p.relative_to(snap).as_posix(): p.stat().st_size for p in snap.rglob("*") if p.is_file()}
    return {f.path: f.size for f in hf.HfApi().list_repo_tree(repo, recursive=True) if isinstance(f, hf.hf_api.RepoFile)}


def cached(repo: str, name: str, cache_dir: str | None) -> Path | None:
    """The file from the local cache, or None when it is not there."""
    import huggingface_hub as hf

    found = hf.try_to_load_from_cache(repo, name, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


def download(repo: str, files: dict[str, int], cache_dir: str | None, label: str) -> Path:
    """Fetch `files` (name -> size) of `repo` into the Hugging Face cache, with one progress bar for
    them all; the snapshot folder that holds them. Files already there are not fetched again."""
    import huggingface_hub as hf

    bar = _Bar(label, sum(files.values()))
    try:
        for name in files:
            if not offline():
                _fetch(repo, name, cache_dir, bar)
            path = Path(hf.hf_hub_download(repo, name, cache_dir=cache_dir))   # links a fetched blob into the snapshot
            bar.done(files[name])
    except KeyboardInterrupt:
        bar.close()
        raise VllamaError(f"the download of {label} stopped at {bar.text()}: the part downloaded stays in "
                          f"{bar.partial}; load it again to resume") from None
    bar.close()
    snap = path.parents[len(Path(name).parts) - 1]
    if bar.fetched:
        notice(f"downloaded {label} ({bar.text()}) to {snap}")
    return snap


def _fetch(repo: str, name: str, cache_dir: str | None, bar: _Bar) -> None:
    """Transfer one file into its blob in the cache, resuming a partial one (unless it is there).

    The loop is ours, not huggingface_hub's `http_get`: that one writes in 10 MB pieces (a bar
    that moves every 10 MB) and its caller deletes the partial file on an interrupt."""
    import huggingface_hub as hf
    from filelock import FileLock
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    meta = hf.get_hf_file_metadata(hf.hf_hub_url(repo, name))
    cache, folder = Path(cache_dir or hf.constants.HF_HUB_CACHE), repo_folder_name(repo_id=repo, repo_type="model")
    blob = cache / folder / "blobs" / meta.etag
    if blob.exists():
        return
    locks = cache / ".locks" / folder
    for where in (blob.parent, locks):
        where.mkdir(parents=True, exist_ok=True)
    partial = bar.partial = blob.with_name(f"{meta.etag}.partial")
    with FileLock(locks / f"{meta.etag}.partial.lock"):   # two kernels fetching one model take turns
        if blob.exists():
            return
        with open(partial, "ab") as f:
            held = f.tell()
            ask = {"Range": f"bytes={held}-"} if held else {}
            with get_session().stream("GET", meta.location, headers={**build_hf_headers(), **ask},
                                      follow_redirects=True, timeout=hf.constants.HF_HUB_DOWNLOAD_TIMEOUT) as r:
                hf_raise_for_status(r)
                if held and r.status_code != 206:   # the server sent the whole file: start again
                    f.seek(0)
                    f.truncate()
                    held = 0
                bar.show(held)
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
                    bar.show(len(chunk))
            if f.tell() != meta.size:
                raise OSError(f"{name} came to {f.tell():,} bytes, not {meta.size:,}: load it again to resume")
        os.replace(partial, blob)


class _Bar:
    """One tqdm bar (a widget in a notebook) for every file of a download, made when bytes first move."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.bar = None
        self.n = 0               # bytes held: the files done, and the part of the one in flight
        self.base = 0            # bytes of the files done
        self.fetched = False
        self.partial: Path | None = None

    def show(self, n: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.base, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=f"downloading {self.label}")
        self.fetched = True
        self.n += n
        self.bar.update(n)

    def done(self, size: int) -> None:
        self.base += size
        if self.bar is not None and self.n < self.base:   # a file that was there already
            self.bar.update(self.base - self.n)
        self.n = self.base

    def text(self) -> str:
        return f"{size_text(self.n)} of {size_text(self.total)}" if self.n < self.total else size_text(self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def first_bytes(repo: str, name: str):
    """A reader of the file's bytes from `start` to `end` by HTTP ranges, without downloading it."""
    import huggingface_hub as hf
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    with speaking(repo):
        url = hf.get_hf_file_metadata(hf.hf_hub_url(repo, name)).location

    def read(start: int, end: int) -> bytes:
        with speaking(repo):
            r = get_session().get(url, headers={**build_hf_headers(), "Range": f"bytes={start}-{end - 1}"},
                                  follow_redirects=True)
            hf_raise_for_status(r)
        if r.status_code != 206 or len(r.content) != end - start:
            raise VllamaError(f"the Hub did not give bytes {start:,}-{end:,} of {repo}/{name} (HTTP {r.status_code}): "
                              "download it to plan it from the file")
        return r.content
    return read
