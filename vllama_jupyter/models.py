"""Model references: the embedded default, local files and folders, Hugging Face repo ids, aliases.

Each engine needs one form of a model: llama.cpp a GGUF file, vLLM a Hugging Face model folder
(config.json + safetensors + tokenizer). `resolve` finds that form or says clearly why there is none.
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import VllamaError

EMBEDDED_NAME = "tiny-shakespeare"
EMBEDDED_DIR = Path(__file__).parent / "data" / EMBEDDED_NAME
EMBEDDED_NAMES = ("", "embedded", "default", EMBEDDED_NAME)


@dataclass(frozen=True)
class HubModel:
    repo: str           # the Hugging Face model (safetensors), for vLLM
    gguf_repo: str      # where a GGUF conversion lives, for llama.cpp
    gguf_pattern: str   # which quantisation to take


ALIASES: dict[str, HubModel] = {
    "qwen2.5-0.5b": HubModel("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "*q4_k_m.gguf"),
    "qwen2.5-1.5b": HubModel("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "*q4_k_m.gguf"),
    "llama3.2-1b": HubModel("meta-llama/Llama-3.2-1B-Instruct", "bartowski/Llama-3.2-1B-Instruct-GGUF", "*Q4_K_M.gguf"),
}

FORMS = {"llamacpp": "gguf", "vllm": "hf"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[^/\s]+)?$")
_PREFERRED_QUANTS = ("q4_k_m", "q5_k_m", "q8_0", "f16")


@dataclass(frozen=True)
class ModelRef:
    """A local model in the form one engine loads: `path` is a GGUF file or an HF folder.
    Two references are equal when they point at the same file or folder in the same form."""

    name: str = field(compare=False)     # short label shown in status and stats lines
    path: Path
    form: str                            # "gguf" or "hf"
    source: str = field(compare=False)   # "embedded", "local", "hub"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(os.path.realpath(self.path)))


@dataclass(frozen=True)
class RemoteRef:
    """A model behind an OpenAI-compatible server. `model` None means the server's first."""

    url: str
    model: str | None = None

    @property
    def name(self) -> str:
        return self.model or self.url

    @property
    def source(self) -> str:
        return "remote"


def cache_dir() -> Path:
    """$VLLAMA_CACHE; by default $XDG_CACHE_HOME (~/.cache)/vllama-jupyter."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("VLLAMA_CACHE") or os.path.join(root, "vllama-jupyter"))


def embedded(form: str) -> ModelRef:
    path = EMBEDDED_DIR / ("model.gguf" if form == "gguf" else "hf")
    return ModelRef(EMBEDDED_NAME, path, form, "embedded")


def resolve(ref: str | os.PathLike | None, engine: str, cache_dir: str | None = None,
            fetch: bool = True) -> ModelRef | HubFiles:
    """The form of `ref` that `engine` ("llamacpp" or "vllm") loads; fetch=False: a Hub model that
    is not in the cache is not downloaded but described (HubFiles)."""
    form = FORMS[engine]
    text = "" if ref is None else str(ref).strip()
    if text.lower() in EMBEDDED_NAMES:
        return embedded(form)
    path = Path(os.path.expanduser(text))
    if path.exists():
        return _local(path, form, engine)
    alias = ALIASES.get(text.lower())
    if alias:
        return _hub(alias.gguf_repo, alias.gguf_pattern, form, engine, cache_dir, text, fetch) if form == "gguf" \
            else _hub(alias.repo, None, form, engine, cache_dir, text, fetch)
    if text.lower().endswith(".gguf") or text.startswith((".", "/", "~")):
        raise VllamaError(f"model file not found: {text} (check the path)")
    if _REPO_ID.match(text):
        repo, _, pattern = text.partition(":")
        return _hub(repo, pattern or None, form, engine, cache_dir, text, fetch)
    raise VllamaError(f"unknown model {text!r}: give a path to a .gguf file or model folder, a Hugging Face "
                      f"repo id (org/name), or one of: embedded, {', '.join(ALIASES)}")


def _local(path: Path, form: str, engine: str) -> ModelRef:
    name = path.name
    if path.is_file():
        if form == "gguf":
            return ModelRef(name, path, "gguf", "local")
        raise VllamaError(f"{path} is a single file; {engine} needs a Hugging Face model folder "
                          "(config.json + weights): pass the folder, or use engine='llamacpp' for GGUF files")
    ggufs = sorted(path.glob("*.gguf"))
    if form == "hf":
        if (path / "config.json").exists():
            return ModelRef(name, path, "hf", "local")
        hint = " (it holds GGUF files: use engine='llamacpp')" if ggufs else ""
        raise VllamaError(f"{path} has no config.json, so {engine} cannot load it{hint}")
    if not ggufs:
        hint = (" (it is a Hugging Face model folder: use engine='vllm', or convert it with llama.cpp's "
                "convert_hf_to_gguf.py)") if (path / "config.json").exists() else ""
        raise VllamaError(f"{path} holds no .gguf file, which llama.cpp needs{hint}")
    return ModelRef(name, _pick_gguf([p.name for p in ggufs], None, str(path), path), "gguf", "local")


def is_projector(name: str) -> bool:
    """A vision projector (mmproj*.gguf), which goes with a model and is never the model itself."""
    base = name.rsplit("/", 1)[-1].lower()
    return base.startswith("mmproj") and base.endswith(".gguf")


def pick_projector(names: list[str]) -> str | None:
    """Of several projectors of one model, the one to load: full precision first."""
    names = sorted(n for n in names if is_projector(n))
    for q in ("f16", "bf16", "f32", "q8"):
        hit = [n for n in names if q in n.lower()]
        if hit:
            return hit[0]
    return names[0] if names else None


def _pick_gguf(files: list[str], pattern: str | None, where: str, root: Path | None = None):
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    ggufs = [f for f in ggufs if not is_projector(f)] or ggufs
    if pattern:
        pat = pattern.lower()
        if not any(ch in pat for ch in "*?["):
            pat = f"*{pat}*"
        ggufs = [f for f in ggufs if fnmatch.fnmatch(f.lower(), pat)]
        if not ggufs:
            raise VllamaError(f"no GGUF file in {where} matches {pattern!r}")
    parts = [f for f in ggufs if re.search(r"-0*1-of-\d+\.gguf$", f)]
    if len(ggufs) > 1 and not parts:
        for q in _PREFERRED_QUANTS:
            hit = [f for f in ggufs if q in f.lower()]
            if hit:
                ggufs = hit
                break
    chosen = (parts or ggufs)[0]
    return root / chosen if root is not None else chosen


@dataclass(frozen=True)
class HubFiles:
    """A Hub model not downloaded yet, as a plan sees it: which files a load would fetch, and their sizes."""

    name: str
    repo: str
    form: str
    files: tuple[tuple[str, int], ...]   # (name, bytes): the model's files, the projector last
    chosen: str | None = None            # a GGUF model: the file (its first part) whose header tells its shape
    projector: str | None = None
    source: str = "hub"


def _hub(repo: str, pattern: str | None, form: str, engine: str, cache_dir: str | None, label: str,
         fetch: bool = True) -> ModelRef | HubFiles:
    """The model from the Hub (its GGUF, or its HF folder), downloaded into the Hugging Face cache
    unless it is there; fetch=False: HubFiles when it would have to be downloaded."""
    try:
        from . import hub
    except ImportError:
        raise VllamaError("huggingface_hub is needed for Hub models: pip install huggingface_hub") from None
    if not fetch:   # a plan: from the cache when the model is there, without asking the Hub
        try:
            ref = _hub_files(hub, hub.listing(repo, cache_dir, local=True), repo, pattern, form, engine, cache_dir,
                             label, False)
            if isinstance(ref, ModelRef):
                return ref
        except (VllamaError, LookupError, OSError):
            pass
    with hub.speaking(repo):
        return _hub_files(hub, hub.listing(repo, cache_dir), repo, pattern, form, engine, cache_dir, label, fetch)


def _hub_files(hub, files: dict[str, int], repo, pattern, form, engine, cache_dir, label, fetch):
    """The reference to a Hub model whose repo holds `files` (name -> size)."""
    chosen = projector = None
    if form == "gguf":
        if not any(f.lower().endswith(".gguf") for f in files):
            raise VllamaError(f"{repo} has no GGUF file, which llama.cpp needs: pick a GGUF repo "
                              f"(often {repo}-GGUF) or use engine='vllm'")
        chosen = _pick_gguf(list(files), pattern, repo)
        shard = re.sub(r"-0*1-of-(\d+)\.gguf$", r"-*-of-\1.gguf", chosen)
        here = chosen.rsplit("/", 1)[0] + "/" if "/" in chosen else ""
        projector = pick_projector([f for f in files if f.startswith(here) and "/" not in f[len(here):]])
        # a vision model's projector comes with it, beside it in the snapshot
        wanted = sorted(f for f in files if fnmatch.fnmatch(f, shard)) + ([projector] if projector else [])
    else:
        if "config.json" not in files:
            raise VllamaError(f"{repo} has no config.json, so {engine} cannot load it"
                              + (" (it holds GGUF files: use engine='llamacpp')"
                                 if any(f.endswith(".gguf") for f in files) else ""))
        wanted = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in _NOT_FOR_VLLM)]
    if not fetch:
        found = hub.cached(repo, chosen or "config.json", cache_dir)
        if found is None or not all(hub.cached(repo, f, cache_dir) for f in wanted):
            return HubFiles(label, repo, form, tuple((f, files[f]) for f in wanted), chosen, projector)
        return ModelRef(label, found if chosen else found.parent, form, "hub")
    snap = hub.download(repo, {f: files[f] for f in wanted}, cache_dir, label)
    return ModelRef(label, snap / chosen if chosen else snap, form, "hub")


_NOT_FOR_VLLM = ("*.gguf", "*.bin", "*.pt", "*.h5", "*.msgpack", "original/*")   # a HF folder's other weight formats


def list_models(folders: list[str] | None = None) -> list[dict]:
    """Models this kernel can load: the embedded one, GGUF files / HF folders in `folders`
    (default: $VLLAMA_MODELS, colon-separated) and the Hugging Face cache."""
    rows = [{"model": EMBEDDED_NAME, "where": "embedded", "forms": "gguf, hf"}]
    env = os.environ.get("VLLAMA_MODELS", "")
    for folder in folders if folders is not None else [f for f in env.split(os.pathsep) if f]:
        rows += _scan(Path(os.path.expanduser(folder)))
    try:
        from huggingface_hub import scan_cache_dir
        for repo in sorted(scan_cache_dir().repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model":
                continue
            names = {f.file_name for rev in repo.revisions for f in rev.files}
            forms = [x for x, ok in (("gguf", any(n.endswith(".gguf") for n in names)),
                                     ("hf", "config.json" in names)) if ok]
            if forms:
                rows.append({"model": repo.repo_id, "where": "HF cache", "forms": ", ".join(forms)})
    except Exception:
        pass  # no cache yet, or huggingface_hub missing
    return rows


def _scan(root: Path, max_dirs: int = 2000, max_depth: int = 4) -> list[dict]:
    """GGUF files and HF folders under `root`, looking at most `max_dirs` folders `max_depth` deep;
    unreadable folders are skipped."""
    if not root.is_dir():
        raise VllamaError(f"{root} is not a folder: give folders that hold .gguf files or model folders")
    rows, seen = [], 0
    for here, dirs, files in os.walk(root, onerror=lambda e: None):
        seen += 1
        depth = len(Path(here).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
        rows += [{"model": os.path.join(here, f), "where": "local", "forms": "gguf"}
                 for f in sorted(files) if f.lower().endswith(".gguf") and not is_projector(f)]
        if "config.json" in files:
            rows.append({"model": here, "where": "local", "forms": "hf"})
        if seen >= max_dirs:
            rows.append({"model": f"(stopped after {max_dirs} folders of {root}: name a smaller folder)",
                         "where": "local", "forms": "-"})
            break
    return rows
