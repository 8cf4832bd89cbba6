"""The session: bad input leaves the loaded engine in place; unload frees memory; imports stay light."""
import json
import shutil
import threading

import pytest

import vllama_jupyter as v
from vllama_jupyter.errors import BusyError, VllamaError
from vllama_jupyter.models import EMBEDDED_DIR

from .conftest import run_python


def bad_gguf(tmp_path, kind):
    path = tmp_path / f"{kind}.gguf"
    data = (EMBEDDED_DIR / "model.gguf").read_bytes()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"not a gguf file at all" * 100)
    return str(path)


CASES = {
    "unknown model": (lambda s, t: s.load("no-such-model-anywhere"), "unknown model 'no-such-model-anywhere'"),
    "missing file": (lambda s, t: s.load("/nope/x.gguf"), "model file not found: /nope/x.gguf"),
    "truncated gguf": (lambda s, t: s.load(bad_gguf(t, "truncated"), "llamacpp"), "is not a valid GGUF file"),
    "corrupt gguf": (lambda s, t: s.load(bad_gguf(t, "corrupt"), "llamacpp"), "is not a valid GGUF file"),
    "unknown engine": (lambda s, t: s.load(None, "tensorrt"), "unknown engine 'tensorrt'"),
    "zero max tokens": (lambda s, t: s.generate("ROMEO:", max_tokens=0), "max_tokens must be a whole number >= 1"),
    "negative max tokens": (lambda s, t: s.generate("ROMEO:", max_tokens=-5), "max_tokens must be a whole number >= 1"),
    "temperature too high": (lambda s, t: s.generate("ROMEO:", temperature=3.5), "temperature must be between 0 and 2"),
    "temperature negative": (lambda s, t: s.generate("ROMEO:", temperature=-0.1), "temperature must be between 0 and 2"),
    "empty prompt": (lambda s, t: s.generate("   \n"), "the prompt is empty"),
    "prompt over the context": (lambda s, t: s.generate("ROMEO: " * 900), "but the context holds 1024"),
    "unknown sampling option": (lambda s, t: s.generate("ROMEO:", temprature=1), "unknown sampling option 'temprature'"),
    "unknown engine option": (lambda s, t: s.load(None, "llamacpp", n_cxt=10), "unknown llama.cpp option 'n_cxt'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_keeps_the_engine(session, tmp_path, case):
    before = session.engine
    action, words = CASES[case]
    with pytest.raises(VllamaError) as e:
        action(session, tmp_path)
    msg = str(e.value)
    assert words in msg and "\n" not in msg
    assert session.engine is before and session.state == "idle" and not session.busy
    assert session.generate("ROMEO:", max_tokens=3, temperature=0).output_tokens == 3


def test_busy_session_refuses_a_second_driver(session):
    stream = session.stream("ROMEO:", max_tokens=50, temperature=0)
    next(stream)
    assert session.busy and session.state == "generating"
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(BusyError, session.generate, "JULIET:")))
    t.start()
    t.join()
    assert "busy" in str(errors[0].value)
    stream.close()
    assert not session.busy and session.state == "idle"
    assert session.last.finish_reason == "cancelled"


def test_public_api_round_trip(session):
    r = v.generate("ROMEO:", max_tokens=4, temperature=0)
    assert r.output_tokens == 4 and v.status()["loaded"] and v.status()["engine"] == "llamacpp"
    assert "why" in v.status() and v.status()["model"] == "tiny-shakespeare"
    results = v.batch(["ROMEO:", "JULIET:"], max_tokens=3, temperature=0)
    assert [x.output_tokens for x in results] == [3, 3]
    st = v.stream("ROMEO:", max_tokens=4, temperature=0)
    assert "".join(d.text for d in st) == r.text


def test_switch_then_unload_returns_rss(tmp_path):
    """Loading another model then unloading hands back what the models took: over three cycles of
    load, switch, unload the process's memory after each unload stays level (the first use of a
    second file keeps a few MB of caches once), well below what the loaded models held."""
    other = tmp_path / "other.gguf"
    shutil.copy(EMBEDDED_DIR / "model.gguf", other)
    code = f"""
import gc, json, psutil, vllama_jupyter as v
import llama_cpp  # the library itself stays imported; we measure what a model costs
rss = lambda: psutil.Process().memory_info().rss
v.load(None, "llamacpp"); v.generate("ROMEO:", max_tokens=8); v.unload(); gc.collect()
before, loaded, after = rss(), [], []
for _ in range(3):
    v.load(None, "llamacpp", n_ctx=1024)
    v.generate("ROMEO:", max_tokens=8)
    v.load({str(other)!r}, "llamacpp", n_ctx=1024, use_mmap=False)   # switch: the first is freed first
    v.generate("ROMEO:", max_tokens=8)
    loaded.append(rss())
    v.unload(); gc.collect()
    after.append(rss())
print(json.dumps({{"before": before, "loaded": loaded, "after": after}}))
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    took = min(m["loaded"]) - m["before"]
    assert took > 5 * 2**20, m  # the model really took memory
    assert max(m["after"]) - m["after"][0] <= 2 * 2**20, m   # no cycle keeps more than the first
    assert max(m["after"]) - m["before"] <= 0.5 * took, m


def test_import_and_load_ext_pull_in_no_engine():
    r = run_python("import vllama_jupyter", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert "vllama_jupyter" in imported
    assert not imported & {"vllm", "llama_cpp", "torch"}
    code = ("import sys; from IPython.testing.globalipapp import start_ipython; ip = start_ipython();"
            "ip.run_line_magic('load_ext', 'vllama_jupyter'); ip.run_line_magic('vllama', 'hardware');"
            "print(sorted(m for m in ('vllm', 'llama_cpp', 'torch') if m in sys.modules))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert "OS:" in r.stdout and r.stdout.strip().endswith("[]")


def test_public_names_stay_what_the_readme_says():
    """Importing every submodule (as engines, widgets and benchmarks do) replaces no public name."""
    r = run_python("import importlib, pkgutil, vllama_jupyter as v\n"
                   "for m in pkgutil.walk_packages(v.__path__, 'vllama_jupyter.'):\n"
                   "    if not m.name.endswith('.__main__'):\n"
                   "        importlib.import_module(m.name)\n"
                   "import inspect\n"
                   "print(all(inspect.isfunction(getattr(v, n)) for n in ('load', 'unload', 'status', 'generate', "
                   "'stream', 'chat', 'batch', 'serve', 'panel', 'bench_widget', 'hardware')))\n"
                   "print(inspect.ismodule(v.bench))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]
