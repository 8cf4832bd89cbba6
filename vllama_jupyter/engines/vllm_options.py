"""vLLM's options, checked before vLLM starts anything: names, ranges, and the executor."""
from __future__ import annotations

import dataclasses

from ..errors import VllamaError
from ..options import Option

# our option -> what it means; everything else must be an AsyncEngineArgs field
OUR_OPTIONS = {"cpu_kv_cache_gb": "GiB of KV cache on CPU hosts (VLLM_CPU_KVCACHE_SPACE)",
               "ray_address": "the Ray cluster for distributed_executor_backend='ray' (else $RAY_ADDRESS)",
               "speculative": "'ngram': prompt-lookup speculative decoding (vLLM's speculative_config, method ngram)"}
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


def gpu_present() -> bool:
    from ..hardware import hardware

    hw = hardware()
    return hw.nvidia or hw.rocm


def nvidia() -> bool:
    from ..hardware import hardware
    return hardware().nvidia


def check_options(options: dict) -> None:
    """Clear errors for the options people get wrong, before vLLM starts anything."""
    from vllm import AsyncEngineArgs

    names = {f.name for f in dataclasses.fields(AsyncEngineArgs)} | set(OUR_OPTIONS)
    unknown = sorted(set(options) - names)
    if unknown:
        raise VllamaError(f"unknown vLLM option {unknown[0]!r}: see vllm.AsyncEngineArgs for the options")
    from .speculative import check as check_speculative

    if check_speculative(options.get("speculative")) and options.get("speculative_config") is not None:
        raise VllamaError("give speculative='ngram' or a speculative_config of your own, not both")
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len"):
        Option(key, "int", None, "", low=1, optional=True).check(options.get(key))
    gmu = options.get("gpu_memory_utilization")
    if gmu is not None and not (isinstance(gmu, (int, float)) and 0 < gmu <= 1):
        raise VllamaError(f"gpu_memory_utilization must be in (0, 1] (got {gmu!r})")
    if options.get("dtype") is not None and options["dtype"] not in DTYPES:
        raise VllamaError(f"dtype must be one of {', '.join(DTYPES)} (got {options['dtype']!r})")
    kv = options.get("cpu_kv_cache_gb")
    if kv is not None and (not isinstance(kv, (int, float)) or kv <= 0):
        raise VllamaError(f"cpu_kv_cache_gb must be a positive number of GiB (got {kv!r})")
    ray = options.get("ray_address")
    if ray is not None and (not isinstance(ray, str) or not ray.strip()):
        raise VllamaError(f"ray_address must be a cluster address like 'HEAD:6379' (got {ray!r})")
    if ray is not None and options.get("distributed_executor_backend") != "ray":
        raise VllamaError("ray_address goes with distributed_executor_backend='ray'")
    backend = options.get("distributed_executor_backend")
    if backend == "ray":
        check_ray()
    if backend is not None and backend not in ("ray", "mp", "uni", "external_launcher"):
        raise VllamaError(f"distributed_executor_backend must be ray, mp, uni or external_launcher (got {backend!r})")


def check_ray() -> None:
    """vLLM runs its Ray executor only on platforms with a Ray device (CUDA, ROCm, ...); its CPU
    build has none and refuses deep inside the engine process. Say so before anything starts."""
    from vllm.platforms import current_platform

    if not getattr(current_platform, "ray_device_key", ""):
        raise VllamaError(f"vLLM on this machine ({current_platform.device_name}) cannot run the Ray executor "
                          f"(vLLM: 'current platform {current_platform.device_name} does not support ray'): "
                          "Ray needs GPU nodes (CUDA or ROCm); leave distributed_executor_backend out here")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise VllamaError("distributed_executor_backend='ray' needs Ray: pip install 'vllama-jupyter[ray]'")
