"""GGUF files and llama.cpp's own checks: the header and tensor table, the memory a context needs,
a vocabulary-only load (a model this llama.cpp cannot run is refused before anything is freed),
and llama.cpp's C log lines routed to Python logging."""
from __future__ import annotations

import ctypes
import inspect
import logging
from collections import deque
from pathlib import Path

from ..errors import VllamaError
from ..options import Option
from . import openmp

openmp.prepare()   # before anything here loads llama.cpp (and libgomp with it)


def check_gguf(path: Path) -> dict:
    """Read a GGUF file's header and tensor table (llama.cpp's own reader: gguf_header.py); a
    truncated or corrupt file is a clear error.

    Returns the few metadata fields we use (architecture, context length, shape, chat template,
    the vocabulary's size as "tokenizer.ggml.tokens").
    A file is read once: check() and load() of the same unchanged file share the result."""
    try:
        st = path.stat()
    except OSError:
        return _read_gguf(path)   # says clearly what is wrong with it
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _META:
        _META.clear()   # only the file being loaded is worth keeping
        _META[key] = _read_gguf(path)
    return _META[key]


_META: dict = {}


def _read_gguf(path: Path, size: int | None = None, name: str | None = None) -> dict:
    from .gguf_header import Unreadable, read_header

    route_logs()
    logs.clear()
    try:
        return read_header(path, _wanted, size, name)
    except Unreadable:   # the reader's first complaint is the cause, the later ones its echo
        why = " ".join(logs[0].split())[:200] if logs else last_error()
        raise VllamaError(f"{name or path} is not a valid GGUF file ({why}); it may be truncated: download or "
                          "convert it again") from None


def read_start(path: Path, size: int, name: str) -> dict | None:
    """The header of a GGUF file of `size` bytes of which `path` holds the first bytes; None when
    they do not hold the whole header yet (and the file goes on)."""
    from .gguf_header import Unreadable, read_header

    if path.stat().st_size >= size:
        return _read_gguf(path, size, name)
    route_logs()
    try:
        return read_header(path, _wanted, size, name)
    except Unreadable:
        return None


def _wanted(key: str) -> bool:
    return key in _NAMED_KEYS or key.endswith(_SHAPE_KEYS)


_NAMED_KEYS = ("general.architecture", "general.file_type", "general.type", "adapter.type", "tokenizer.chat_template",
               "tokenizer.ggml.tokens",
               "clip.has_vision_encoder", "clip.projector_type", "clip.vision.projector_type")   # the last three: a vision projector (mmproj)
_SHAPE_KEYS = (".context_length", ".pooling_type", ".block_count", ".embedding_length", ".attention.head_count",
               ".attention.head_count_kv", ".attention.key_length", ".attention.value_length", ".vocab_size")


def check_options(options: dict) -> None:
    import llama_cpp

    allowed = set(inspect.signature(llama_cpp.Llama.__init__).parameters) - {"self", "model_path", "kwargs"}
    allowed.add("prompt_cache")   # ours: reuse the KV cache of a shared prompt prefix
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise VllamaError(f"unknown llama.cpp option {unknown[0]!r}: see help(llama_cpp.Llama) for the options")
    for key, least in (("n_ctx", 16), ("n_batch", 1), ("n_ubatch", 1), ("n_threads", 1), ("n_threads_batch", 1)):
        why = "leave it out to use the context the model was trained on" if key == "n_ctx" else ""
        Option(key, "int", None, why, low=least, optional=True).check(options.get(key))
    if options.get("prompt_cache") is not None and not isinstance(options["prompt_cache"], bool):
        raise VllamaError(f"prompt_cache must be True, False or None (got {options['prompt_cache']!r})")
    for key in ("type_k", "type_v"):
        v = options.get(key)
        if v is not None and v not in CACHE_TYPES.values():
            raise VllamaError(f"{key} must be a KV cache type number: " + ", ".join(f"{n} ({k})" for k, n in CACHE_TYPES.items()))


def _arch(meta: dict) -> str:
    return meta.get("general.architecture", "")


def trained_context(meta: dict) -> int:
    return meta.get(f"{_arch(meta)}.context_length", 4096)


def probe(path: Path) -> None:
    """Read the model's architecture, hyper-parameters and vocabulary (no weights): a model this
    llama.cpp cannot run is refused here, before anything loaded is given up."""
    import llama_cpp

    route_logs()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    logs.clear()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise VllamaError(f"llama.cpp {llama_cpp.__version__} cannot run {path.name}: {last_error()}")
    llama_cpp.llama_model_free(model)


# -- llama.cpp's own log lines go to Python logging (quiet unless the logger is turned up) ---
log = logging.getLogger("vllama_jupyter.llamacpp")
log.addHandler(logging.NullHandler())  # quiet unless the user configures logging
log.propagate = False
logs: deque[str] = deque(maxlen=20)   # the latest warnings and errors, for error messages
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level
_callback = None


def route_logs() -> None:
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    last = [logging.DEBUG]

    def on_log(level, text, _user):
        lvl = last[0] if level == 5 else _LEVELS.get(level, logging.DEBUG)
        last[0] = lvl
        line = text.decode("utf-8", "replace").rstrip()
        if line.strip(" ."):
            if lvl >= logging.WARNING:
                logs.append(line)
            log.log(lvl, line)
    _callback = llama_cpp.llama_log_callback(on_log)  # kept: C holds a pointer to it
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    from .gguf_header import route_log
    route_log(_callback)   # ggml's own lines (the GGUF reader's)
    try:   # the multimodal library (mtmd) and its helpers log on their own
        import llama_cpp.mtmd_cpp as mtmd

        mtmd.mtmd_log_set(_callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_callback, ctypes.c_void_p(0))
    except (ImportError, AttributeError, OSError):
        pass


def last_error() -> str:
    """The most telling recent llama.cpp log line: the reason it gave, else the last error."""
    for line in reversed(logs):
        if "error loading model:" in line:
            return " ".join(line.split("error loading model:", 1)[1].split())[:200]
    for line in reversed(logs):
        if any(w in line.lower() for w in ("error", "failed", "unknown")):
            return " ".join(line.split())[:200]
    return " ".join(logs[-1].split())[:200] if logs else "llama.cpp gave no reason"


CACHE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


FIRST_READ = 1 << 20        # a Hub header's first ranged read; each further one doubles what is held
HEADER_LIMIT = 256 << 20    # past this, a file whose header is still unread is not a GGUF


def hub_header(repo: str, name: str, size: int) -> dict:
    """A GGUF file's header from the Hub, without downloading the file: its first bytes, read in
    ranges each twice as long as the last, until llama.cpp's reader reads the whole header."""
    import tempfile

    from ..hub import first_bytes

    read = first_bytes(repo, name)
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "start.gguf"
        held, want = 0, FIRST_READ
        with open(part, "wb") as f:
            while True:
                want = min(want, size, HEADER_LIMIT)
                f.write(read(held, want))
                f.flush()
                held = want
                meta = read_start(part, size, f"{repo}/{name}")
                if meta is not None:
                    return meta
                if held >= min(size, HEADER_LIMIT):
                    raise VllamaError(f"{repo}/{name} is not a GGUF file llama.cpp can read: its header does not end "
                                      f"in its first {held:,} bytes")
                want = held * 2
