"""llama.cpp's own `llama-server` and `llama-bench`, built once with CMake from the llama.cpp source
that llama-cpp-python's source distribution vendors (the commit our engine runs), with the CPU
options of llama-cpp-python's own build (native CPU variant, OpenMP, Release). Kept in
$VLLAMA_BENCH_CACHE/llama.cpp-<version>-tools; the first build takes about 10 minutes on 2 cores.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from models import CACHE, _sdist

TOOLS = ("llama-server", "llama-bench")


def native_tools() -> dict[str, Path]:
    import llama_cpp

    out = CACHE / f"llama.cpp-{llama_cpp.__version__}-tools"
    found = {t: out / t for t in TOOLS}
    if all(p.exists() for p in found.values()):
        return found
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("cmake is needed to build llama.cpp's llama-server and llama-bench: apt-get install cmake")
    with tempfile.TemporaryDirectory(prefix="vllama-llama.cpp-") as tmp:
        with tarfile.open(_sdist()) as tar:
            tar.extractall(tmp, members=[m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name],
                           filter="data")
        src = next(Path(tmp).glob("*/vendor/llama.cpp"))
        build = Path(tmp) / "build"
        t0 = time.perf_counter()
        subprocess.run([cmake, "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                        "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                        "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DGGML_NATIVE=ON"],
                       check=True, capture_output=True)
        subprocess.run([cmake, "--build", str(build), "--config", "Release", "-j", str(os.cpu_count() or 2),
                        "--target", *TOOLS], check=True, capture_output=True)
        out.mkdir(parents=True, exist_ok=True)
        for t in TOOLS:
            shutil.copy2(build / "bin" / t, out / f"{t}.part")
            os.replace(out / f"{t}.part", out / t)
        print(f"built {', '.join(TOOLS)} in {time.perf_counter() - t0:.0f} s", flush=True)
    return found
