"""LoRA adapters on the loaded model. An adapter is a GGUF adapter file, or a PEFT folder
(adapter_config.json + safetensors) that llama.cpp's own convert_lora_to_gguf.py turns into one,
once: the converter comes from the source distribution of the installed llama-cpp-python (the
same llama.cpp commit as the engine), and the result is kept in the cache by the folder's hash."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import VllamaError


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path       # what llama.cpp loads: a GGUF adapter
    source: Path     # what was given: the GGUF, or the PEFT folder
    sha256: str      # of what was given
    scale: float

    def record(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "scale": self.scale, "source": str(self.source)}


def listing(records: list[dict]) -> str:
    """Adapters' records as lines: 'cheese: /path/to/adapter (scale 1)'."""
    return "\n".join(f"{a['name']}: {a['source']} (scale {a['scale']:g})" for a in records) or "(no adapter)"


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise VllamaError(f"an adapter's scale must be a number, like 1.0 or 0.5 (got {scale!r})")
    return float(scale)


def check_name(name, path: Path | None = None) -> str:
    """The adapter's name: given, or the file's or folder's name."""
    if name is None and path is not None:
        name = path.stem if path.is_file() else path.name
    if not isinstance(name, str) or not re.fullmatch(r"[\w.\-/:]+", name):
        raise VllamaError(f"an adapter's name is one word of letters, digits and . - _ / : (got {name!r})")
    return name


def prepare(path, name=None, scale=1.0, base: Path | None = None) -> Adapter:
    """The adapter at `path` as llama.cpp loads it (a PEFT folder converted once; `base`: the HF
    folder of the base model, when the adapter's config names none on this machine)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise VllamaError(f"an adapter is the path of a GGUF adapter or a PEFT folder (got {path!r})")
    source = Path(os.path.expanduser(str(path))).resolve()
    scale = check_scale(scale)
    name = check_name(name, source)
    if source.is_dir():
        if not (source / "adapter_config.json").is_file():
            raise VllamaError(f"{source} has no adapter_config.json: give a PEFT adapter folder or a GGUF adapter")
        return Adapter(name, convert(source, base), source, _digest(source), scale)
    if not source.is_file():
        raise VllamaError(f"no adapter at {source}: give the path of a GGUF adapter or a PEFT folder")
    check_gguf_adapter(source)
    return Adapter(name, source, source, _digest(source), scale)


def check_gguf_adapter(path: Path) -> None:
    from .gguf import check_gguf

    meta = check_gguf(path)   # one line when it is no GGUF file
    if meta.get("general.type") != "adapter" or meta.get("adapter.type", "lora") != "lora":
        raise VllamaError(f"{path.name} is a GGUF file but not a LoRA adapter (general.type is "
                          f"{meta.get('general.type', 'missing')!r})")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and
                                                 (p.suffix in (".safetensors", ".bin") or p.name == "adapter_config.json"))
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def convert(folder: Path, base: Path | None) -> Path:
    """A PEFT folder as a GGUF adapter: converted once, then taken from the cache by the folder's hash."""
    from ..models import cache_dir

    out = cache_dir() / "lora" / f"{_digest(folder)}.gguf"
    if out.exists():
        return out
    config = json.loads((folder / "adapter_config.json").read_text())
    named = Path(os.path.expanduser(str(config.get("base_model_name_or_path") or "")))
    base = named if (named / "config.json").is_file() else base
    if base is None:
        raise VllamaError(f"{folder.name}'s base model {config.get('base_model_name_or_path')!r} is not a model folder "
                          "here: converting it needs the base model's config.json (set base_model_name_or_path in "
                          "adapter_config.json to its folder)")
    for needed in ("torch", "transformers", "safetensors"):
        try:
            __import__(needed)
        except ImportError:
            raise VllamaError(f"converting a PEFT adapter needs {needed}: pip install torch transformers safetensors, "
                              "or give a GGUF adapter") from None
    script = converter()
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".part")
    r = subprocess.run([sys.executable, str(script), str(folder), "--base", str(base), "--outfile", str(part),
                        "--outtype", "f32"], capture_output=True, text=True, timeout=900, cwd=script.parent)
    if r.returncode != 0 or not part.exists():
        lines = [x for x in (r.stderr + r.stdout).splitlines() if x.strip()]
        why = next((x for x in reversed(lines) if "Error" in x or "error" in x), lines[-1] if lines else "no output")
        part.unlink(missing_ok=True)
        raise VllamaError(f"llama.cpp's converter could not convert {folder.name}: {' '.join(why.split())[:300]}")
    os.replace(part, out)
    return out


def converter() -> Path:
    """llama.cpp's convert_lora_to_gguf.py with what it imports, from the installed version's sources."""
    import llama_cpp

    from ..models import cache_dir

    root = cache_dir() / f"llama.cpp-{llama_cpp.__version__}"
    script = root / "convert_lora_to_gguf.py"
    if script.exists():
        return script
    part = root.with_name(root.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    keep = re.compile(r"^[^/]+/vendor/llama\.cpp/(convert_[\w]+\.py|conversion/.*|gguf-py/.*)$")
    with tarfile.open(sdist(cache_dir() / "sdist")) as tar:
        for m in tar.getmembers():
            hit = keep.match(m.name)
            if hit and m.isfile():
                dest = part / hit[1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    os.replace(part, root)
    return script


def sdist(folder: Path) -> Path:
    """llama-cpp-python's source distribution of the installed version, in `folder` (from PyPI, once)."""
    import llama_cpp

    name = f"llama_cpp_python-{llama_cpp.__version__}.tar.gz"
    if not (folder / name).exists():
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            "-d", str(folder), f"llama-cpp-python=={llama_cpp.__version__}"],
                           capture_output=True, text=True)
        if r.returncode != 0 or not (folder / name).exists():
            raise VllamaError(f"llama.cpp's sources (llama-cpp-python {llama_cpp.__version__}) could not be fetched "
                              "from PyPI to convert the adapter: give a GGUF adapter, or try again with network access")
    return folder / name
