"""Modular's MAX as a managed server (`max serve`): where its command is, the model folder it is
given and the device it runs on. MAX's in-process Python API is private, so its server is the way
in; the openai engine talks to it with the `max` preset."""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

from . import models
from .errors import VllamaError

COMMAND_ENV = "VLLAMA_MAX"   # MAX's `max` command, when it is neither beside this Python nor on PATH
CPU_ENCODINGS = ("float32", "q4_k", "q4_0", "q6_k")   # the weights MAX's CPU kernels take
_FLOAT_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                 "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
# A managed MAX server: on 127.0.0.1 only, silent and offline (no telemetry, no metrics port,
# whose default 8001 would clash between two servers, no Hub lookups for a local folder).
ENV = {"MAX_SERVE_HOST": "127.0.0.1", "MAX_SERVE_DISABLE_TELEMETRY": "1", "OTEL_SDK_DISABLED": "true",
       "HF_HUB_OFFLINE": "1"}


def command() -> str:
    """The `max` command: $VLLAMA_MAX, else the one beside this Python, else on PATH."""
    given = os.environ.get(COMMAND_ENV)
    if given:
        found = shutil.which(given)
        if not found:
            raise VllamaError(f"{COMMAND_ENV}={given} is not a program: point it at MAX's max command "
                              "(…/bin/max) or unset it")
        return found
    here = str(Path(sys.executable).parent)
    found = shutil.which("max", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if not found:
        raise VllamaError("MAX is not installed: pip install 'vllama-jupyter[max]' (or install max[serve] in "
                          f"a virtual environment of its own and set {COMMAND_ENV} to its bin/max)")
    return found


def device() -> str:
    """'gpu' where an NVIDIA GPU is found (NVML), else 'cpu'."""
    from .hardware import hardware

    return "gpu" if hardware().nvidia else "cpu"


def model_folder(ref: models.ModelRef, where: str) -> Path:
    """The folder MAX is given for `ref`: the embedded model as a float32 copy (made once into the
    cache: MAX's CPU kernels take no float16); any other model as it is, once its weights are
    known to be ones MAX can run on `where`."""
    if ref.source == "embedded":
        return _float32_copy(ref.path)
    if where == "cpu":
        found = weight_dtypes(ref.path) - {"float32"}
        if found:
            raise VllamaError(f"MAX on CPU takes {', '.join(CPU_ENCODINGS)} weights and {ref.name} holds "
                              f"{', '.join(sorted(found))}: save a float32 copy (model.float().save_pretrained) "
                              "or serve it on an NVIDIA GPU")
    return ref.path


def weight_dtypes(folder: Path) -> set[str]:
    """The floating-point dtypes of a model folder's safetensors, from their JSON headers alone
    (safetensors' safe_open also checks the data's length: a file cut short is MAX's to report)."""
    found = set()
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        found |= {t["dtype"] for k, t in header.items() if k != "__metadata__"}
    return {_FLOAT_DTYPES[d] for d in found if d in _FLOAT_DTYPES}


def _float32_copy(folder: Path) -> Path:
    from safetensors.numpy import load_file, save_file

    out = models.cache_dir() / "max" / f"{models.EMBEDDED_NAME}-float32"
    weights = folder / "model.safetensors"
    stamp = f"{weights.stat().st_size}-{weights.stat().st_mtime_ns}"
    if (out / "STAMP").is_file() and (out / "STAMP").read_text() == stamp:
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    tensors = load_file(weights)
    save_file({k: v.astype("float32") for k, v in tensors.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp / "config.json").read_text())
    config["dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "STAMP").write_text(stamp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def serve_command(model: Path, name: str, port: int, where: str, n_ctx: int | None) -> list[str]:
    cmd = [command(), "serve", "--model-path", str(model), "--served-model-name", name, "--devices", where,
           "--port", str(port)]   # the host is MAX_SERVE_HOST (ENV): not every MAX takes --host
    return cmd + (["--max-length", str(n_ctx)] if n_ctx else [])
