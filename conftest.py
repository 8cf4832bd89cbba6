"""The test run's own world, for tests/ and notebooks/ alike: a private Jupyter runtime, config
and data dir, IPython dir and vllama cache, no shared engine found (VLLAMA_SHARED=0: the sharing
tests turn it on for the kernels that need it) and none of the user's VLLAMA_* settings. Kernels,
servers and JupyterLab started by the tests inherit it, so a user's open notebooks and the suite
do not see each other. Test models stay cached in $VLLAMA_BENCH_CACHE (benchmarks/models.py)."""
import atexit
import functools
import importlib.util
import json
import os
import shutil
import tempfile

import pytest

KEEP = {"VLLAMA_BENCH_CACHE", "VLLAMA_SETUP_VLLM"}   # how the suite is set up, not the user's settings

_home = tempfile.mkdtemp(prefix="vllama-tests-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
for _name in [n for n in os.environ if n.startswith("VLLAMA_") and n not in KEEP]:
    del os.environ[_name]
for _name, _dir in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                    ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython"), ("VLLAMA_CACHE", "cache")):
    os.environ[_name] = os.path.join(_home, _dir)
    os.makedirs(os.environ[_name])
os.environ["VLLAMA_SHARED"] = "0"
# MAX's compiled models: kept with the test models, so only a fresh cache pays the first compile
os.environ["MODULAR_CACHE_DIR"] = os.path.join(os.environ.get("VLLAMA_BENCH_CACHE") or os.path.join(
    os.path.expanduser("~"), ".cache", "vllama-jupyter"), "modular")


@functools.cache
def _needs(notebook) -> str | None:
    return json.loads(notebook.read_text()).get("metadata", {}).get("vllama", {}).get("needs")


def pytest_collection_modifyitems(items):
    """A notebook that needs vLLM (its metadata says so) is skipped, with the reason, without it."""
    if importlib.util.find_spec("vllm") is not None:
        return
    for item in items:
        if item.path.suffix == ".ipynb" and _needs(item.path) == "vllm":
            item.add_marker(pytest.mark.skip(reason=f"{item.path.name} compares vLLM with llama.cpp: vLLM is not installed"))
