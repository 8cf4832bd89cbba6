"""Facts about this machine: OS, CPU, memory, GPUs. Cheap to gather and cached per process.

NVIDIA GPUs are found through NVML (nvidia-ml-py), which creates no CUDA context; `nvidia-smi`
is the fallback when the library is missing.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    vendor: str = "nvidia"

    def describe(self) -> str:
        return f"{self.name} {self.memory_bytes / 2**30:.0f} GB"


@dataclass(frozen=True)
class Hardware:
    os: str                      # "linux", "darwin", "windows"
    arch: str                    # "x86_64", "arm64", ...
    cpu_flags: tuple[str, ...]   # the ones that matter to engines: avx2, avx512f, neon, ...
    cores: int
    ram_bytes: int
    gpus: tuple[GPU, ...] = ()
    gpu_source: str = ""         # "NVML", "nvidia-smi" or ""
    apple_silicon: bool = False
    rosetta: bool = False
    rocm: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def nvidia(self) -> bool:
        return any(g.vendor == "nvidia" for g in self.gpus)

    def summary(self) -> str:
        """A short human summary, one line per fact group."""
        cpu = f"{self.arch}, {self.cores} cores"
        if self.cpu_flags:
            cpu += f" ({', '.join(self.cpu_flags)})"
        lines = [f"OS: {self.os}", f"CPU: {cpu}", f"RAM: {self.ram_bytes / 2**30:.1f} GB"]
        if self.gpus:
            lines.append(f"GPU: {', '.join(g.describe() for g in self.gpus)} (via {self.gpu_source})")
        elif self.apple_silicon:
            lines.append("GPU: Apple Silicon (Metal)" + (" — Python runs under Rosetta" if self.rosetta else ""))
        elif self.rocm:
            lines.append("GPU: AMD ROCm present")
        else:
            lines.append("GPU: none found")
        return "\n".join(lines + list(self.notes))


INTERESTING_FLAGS = ("avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "f16c", "fma", "neon", "asimd", "sve")


def _cpu_flags(os_name: str, arch: str) -> tuple[str, ...]:
    flags: set[str] = set()
    if os_name == "linux":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith(("flags", "Features")):
                        flags.update(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
    elif os_name == "darwin":
        out = _run(["sysctl", "-a"])
        for line in out.splitlines():
            if line.startswith("hw.optional.") and line.rstrip().endswith(": 1"):
                flags.add(line.split(":")[0].rsplit(".", 1)[-1].lower())
    if arch in ("arm64", "aarch64"):
        flags.add("neon")
    return tuple(f for f in INTERESTING_FLAGS if f in flags)


def _run(cmd: list[str], timeout: float = 5.0) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _nvml_gpus() -> tuple[GPU, ...] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return ()  # library present, no driver or no GPU
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            gpus.append(GPU(name=name, memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total)))
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


def _smi_gpus() -> tuple[GPU, ...]:
    if not shutil.which("nvidia-smi"):
        return ()
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    gpus = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append(GPU(name=name.strip(), memory_bytes=int(mib) * 2**20))
    return tuple(gpus)


def _ram_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect() -> Hardware:
    """Gather the facts now (uncached)."""
    os_name = platform.system().lower()
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "aarch64": "arm64"}.get(arch, arch)
    rosetta = False
    apple = False
    if os_name == "darwin":
        rosetta = _run(["sysctl", "-in", "sysctl.proc_translated"]).strip() == "1"
        apple = arch == "arm64" or rosetta
    gpus: tuple[GPU, ...] = ()
    source = ""
    if os_name in ("linux", "windows"):
        nvml = _nvml_gpus()
        if nvml:
            gpus, source = nvml, "NVML"
        else:
            smi = _smi_gpus()
            if smi:
                gpus, source = smi, "nvidia-smi"
    rocm = os_name == "linux" and (os.path.exists("/dev/kfd") or os.path.isdir("/opt/rocm"))
    notes = ()
    if rosetta:
        notes = ("Note: Python runs under Rosetta (x86_64 on Apple Silicon): install an arm64 Python for Metal.",)
    return Hardware(os=os_name, arch=arch, cpu_flags=_cpu_flags(os_name, arch), cores=os.cpu_count() or 1,
                    ram_bytes=_ram_bytes(), gpus=gpus, gpu_source=source, apple_silicon=apple,
                    rosetta=rosetta, rocm=rocm, notes=notes)


@functools.lru_cache(maxsize=1)
def hardware() -> Hardware:
    """The facts for this process, gathered once."""
    return detect()
