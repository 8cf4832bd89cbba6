"""Engine choice from hardware facts: the whole decision table, fed with facts."""
import pytest

from vllama_jupyter.errors import VllamaError
from vllama_jupyter.hardware import GPU, Hardware, detect, hardware
from vllama_jupyter.engines.selection import choose

H100 = GPU("NVIDIA H100 80GB HBM3", 80 * 2**30)


def hw(os="linux", arch="x86_64", gpus=(), rocm=False, apple=False, rosetta=False):
    return Hardware(os=os, arch=arch, cpu_flags=("avx2",), cores=8, ram_bytes=32 * 2**30, gpus=gpus,
                    gpu_source="NVML" if gpus else "", apple_silicon=apple, rosetta=rosetta, rocm=rocm)


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("VLLAMA_ENGINE", raising=False)


@pytest.mark.parametrize("facts, have, engine, words", [
    (hw(gpus=(H100,)), {"vllm", "llamacpp"}, "vllm", "NVIDIA H100 80GB HBM3 80 GB found via NVML and vllm is installed -> vllm"),
    (hw(os="windows", gpus=(H100,)), {"vllm"}, "vllm", "found via NVML"),
    (hw(gpus=(H100,)), {"llamacpp"}, "llamacpp", "but vllm is not installed -> llamacpp"),
    (hw(rocm=True), {"vllm", "llamacpp"}, "vllm", "AMD ROCm found and vllm is installed"),
    (hw(os="darwin", arch="arm64", apple=True), {"llamacpp", "vllm"}, "llamacpp", "Apple Silicon found -> llamacpp (Metal)"),
    (hw(os="darwin", arch="x86_64", apple=True, rosetta=True), {"llamacpp"}, "llamacpp", "Rosetta"),
    (hw(), {"llamacpp"}, "llamacpp", "no NVIDIA or ROCm GPU found -> llamacpp on CPU"),
    (hw(), {"llamacpp", "vllm"}, "llamacpp", "runs on CPU only when asked"),
    (hw(os="darwin", arch="x86_64"), {"llamacpp"}, "llamacpp", "on CPU"),
])
def test_auto_choice(facts, have, engine, words):
    c = choose(facts, installed=have)
    assert c.engine == engine
    assert words in c.reason


def test_gpu_without_vllm_gives_install_advice():
    c = choose(hw(gpus=(H100,)), installed={"llamacpp"})
    assert "pip install 'vllama-jupyter[vllm]'" in c.advice and c.advice in str(c)


@pytest.mark.parametrize("facts, have, words", [
    (hw(), set(), "no local engine is installed: pip install 'vllama-jupyter[llamacpp]'"),
    (hw(), {"vllm"}, "llama-cpp-python is not installed"),
    (hw(gpus=(H100,)), set(), "pip install 'vllama-jupyter[vllm]'"),
])
def test_nothing_suitable_installed_is_an_error(facts, have, words):
    with pytest.raises(VllamaError, match=None) as e:
        choose(facts, installed=have)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_override_order_argument_env_config(monkeypatch):
    have = {"llamacpp", "vllm", "openai"}
    assert choose(hw(), have, override="vllm").engine == "vllm"
    assert "no GPU found, so vLLM runs on the CPU" in choose(hw(), have, override="vllm").reason
    monkeypatch.setenv("VLLAMA_ENGINE", "openai")
    assert choose(hw(), have).engine == "openai"
    assert choose(hw(), have, override="llama.cpp").engine == "llamacpp"
    assert "VLLAMA_ENGINE" in choose(hw(), have, config="vllm").reason
    monkeypatch.delenv("VLLAMA_ENGINE")
    assert choose(hw(), have, config="vllm").reason.startswith("vllm asked for (config)")
    assert choose(hw(gpus=(H100,)), have, override="auto").engine == "vllm"


def test_asking_for_a_missing_engine_is_an_error_with_advice():
    with pytest.raises(VllamaError) as e:
        choose(hw(gpus=(H100,)), installed={"llamacpp"}, override="vllm")
    assert "not installed" in str(e.value) and "pip install 'vllama-jupyter[vllm]'" in str(e.value)


def test_unknown_engine_name():
    with pytest.raises(VllamaError, match="unknown engine 'ollama': use one of llamacpp, vllm, openai"):
        choose(hw(), installed={"llamacpp"}, override="ollama")


def test_this_machine_facts_are_cached_and_printable():
    assert hardware() is hardware()
    facts = detect()
    assert facts.cores >= 1 and facts.ram_bytes > 2**30 and facts.os in ("linux", "darwin", "windows")
    text = facts.summary()
    assert text.startswith(f"OS: {facts.os}") and "RAM:" in text and "GPU:" in text
    if facts.arch == "x86_64" and facts.os == "linux":
        cpuinfo = open("/proc/cpuinfo").read()
        assert ("avx2" in facts.cpu_flags) == (" avx2" in cpuinfo)
