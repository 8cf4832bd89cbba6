"""A GGUF file's header, read by llama.cpp's own reader (`gguf_init_from_file` with no tensor data)
in the ggml library llama-cpp-python loads: milliseconds however large the vocabulary, where
gguf-py's GGUFReader makes a numpy slice of every token string (seconds for 262,144 tokens). The
reader checks every length against the file's size, so a file cut inside its header is refused;
a file cut inside its tensor data is refused here from the tensor table."""
from __future__ import annotations

import ctypes
import functools
import sys
from pathlib import Path

from ..errors import VllamaError

STRING, ARRAY = 8, 9
_SCALARS = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 10: "u64", 11: "i64",
            12: "f64"}   # gguf_type -> the name of its gguf_get_val_* getter
_C = {"u8": ctypes.c_uint8, "i8": ctypes.c_int8, "u16": ctypes.c_uint16, "i16": ctypes.c_int16, "u32": ctypes.c_uint32,
      "i32": ctypes.c_int32, "f32": ctypes.c_float, "bool": ctypes.c_bool, "u64": ctypes.c_uint64,
      "i64": ctypes.c_int64, "f64": ctypes.c_double}


class _Params(ctypes.Structure):   # struct gguf_init_params
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.cache
def _lib():
    import llama_cpp   # loads the ggml libraries it was built with

    names = {"darwin": "libggml-base.dylib", "win32": "ggml-base.dll"}
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / names.get(sys.platform, "libggml-base.so")))
    ctx, i64, char_p = ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p
    for name, res, args in (("gguf_init_from_file", ctx, [char_p, _Params]), ("gguf_free", None, [ctx]),
                            ("gguf_get_n_kv", i64, [ctx]), ("gguf_get_key", char_p, [ctx, i64]),
                            ("gguf_get_kv_type", ctypes.c_int, [ctx, i64]), ("gguf_get_val_str", char_p, [ctx, i64]),
                            ("gguf_get_arr_n", ctypes.c_size_t, [ctx, i64]),
                            ("gguf_get_data_offset", ctypes.c_size_t, [ctx]), ("gguf_get_n_tensors", i64, [ctx]),
                            ("gguf_get_tensor_offset", ctypes.c_size_t, [ctx, i64]),
                            ("gguf_get_tensor_size", ctypes.c_size_t, [ctx, i64])):
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    for kind, c_type in _C.items():
        f = getattr(lib, f"gguf_get_val_{kind}")
        f.restype, f.argtypes = c_type, [ctypes.c_void_p, ctypes.c_int64]
    return lib


class Unreadable(Exception):
    """llama.cpp's reader refused the file (its reason is in ggml's log)."""


def route_log(callback) -> None:
    """Send ggml's own log lines (the GGUF reader's among them) to `callback` (a llama_log_callback)."""
    lib = _lib()
    lib.ggml_log_set.restype, lib.ggml_log_set.argtypes = None, [type(callback), ctypes.c_void_p]
    lib.ggml_log_set(callback, None)


def read_header(path: Path, wanted, size: int | None = None, name=None) -> dict:
    """The header keys for which `wanted(key)` is true (text, numbers; an array as its length),
    plus "gguf.data_end": where the last tensor's data ends. Unreadable when llama.cpp's reader
    refuses the file; one line when its tensors run past its end (`size`: the whole file's size,
    when `path` holds only its first bytes; `name`: the file's name in that line)."""
    lib = _lib()
    ctx = lib.gguf_init_from_file(str(path).encode(), _Params(True, None))
    if not ctx:
        raise Unreadable(str(path))
    try:
        meta: dict = {}
        for i in range(lib.gguf_get_n_kv(ctx)):
            key = lib.gguf_get_key(ctx, i).decode("utf-8", "replace")
            if not wanted(key):
                continue
            kind = lib.gguf_get_kv_type(ctx, i)
            if kind == STRING:
                meta[key] = lib.gguf_get_val_str(ctx, i).decode("utf-8", "replace")
            elif kind == ARRAY:
                meta[key] = lib.gguf_get_arr_n(ctx, i)
            elif kind in _SCALARS:
                meta[key] = getattr(lib, f"gguf_get_val_{_SCALARS[kind]}")(ctx, i)
        base = lib.gguf_get_data_offset(ctx)
        meta["gguf.data_end"] = base + max((lib.gguf_get_tensor_offset(ctx, i) + lib.gguf_get_tensor_size(ctx, i)
                                            for i in range(lib.gguf_get_n_tensors(ctx))), default=0)
    finally:
        lib.gguf_free(ctx)
    size = size or path.stat().st_size
    if meta["gguf.data_end"] > size:
        raise VllamaError(f"{name or path} is not a valid GGUF file (its tensors need {meta['gguf.data_end']:,} bytes, the file "
                          f"has {size:,}); it may be truncated: download or convert it again")
    return meta
