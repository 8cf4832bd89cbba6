"""The panel and the benchmark widget driven without a browser: set values, click, read state —
on the real llama.cpp engine with the embedded model."""
import html
import shutil
import time

import pytest

import vllama_jupyter as v
from vllama_jupyter.models import EMBEDDED_DIR
from vllama_jupyter.widgets import BenchWidget, Panel


@pytest.fixture
def panel(session):
    p = Panel()
    yield p
    p.stop()
    p.close()
    if session.engine is None or session.ref.source != "embedded" or session.engine.llm.n_ctx() != 1024:
        session.load(None, "llamacpp")


def wait_for(cond, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_generate_streams_into_output_with_stats(panel, engine):
    panel.max_tokens.value, panel.temperature.value = 60, 0.0
    panel.generate_button.click()
    panel.wait()
    expected = engine.generate("ROMEO:\n", v.Sampling(max_tokens=60, temperature=0.0)).text
    assert panel.output.value == expected
    assert "60 tokens" in panel.stats.value and "tokens/s" in panel.stats.value
    assert not panel.generate_button.disabled and panel.stop_button.disabled


def test_penalty_and_min_p_controls_reach_the_engine(panel, engine):
    panel.max_tokens.value, panel.temperature.value = 48, 0.0
    panel.repetition_penalty.value, panel.presence_penalty.value, panel.min_p.value = 1.5, 0.5, 0.1
    panel.generate_button.click()
    panel.wait()
    s = v.Sampling(max_tokens=48, temperature=0.0, repetition_penalty=1.5, presence_penalty=0.5, min_p=0.1)
    assert panel.output.value == engine.generate("ROMEO:\n", s).text != \
        engine.generate("ROMEO:\n", v.Sampling(max_tokens=48, temperature=0.0)).text
    assert (panel.frequency_penalty.min, panel.frequency_penalty.max, panel.frequency_penalty.value) == (-2, 2, 0)


def test_stop_aborts_the_generation_and_panel_keeps_working(panel, session):
    session.load(None, "llamacpp", n_ctx=16384)
    panel.max_tokens.value, panel.temperature.value = 16000, 0.0
    panel.generate_button.click()
    assert wait_for(lambda: len(panel.output.value) > 50)
    assert session.busy and not panel.stop_button.disabled
    panel.stop_button.click()
    res = session.last
    assert res.finish_reason == "cancelled" and 0 < res.output_tokens < 16000
    assert panel.output.value == res.text and not session.busy
    panel.max_tokens.value = 5
    panel.generate_button.click()
    panel.wait()
    assert session.last.output_tokens == 5 and "5 tokens" in panel.stats.value


def test_load_unload_switch_and_errors(panel, session, tmp_path):
    panel.unload_button.click()
    assert "no model loaded" in panel.status.value and session.engine is None
    panel.model.value = "/nope/model.gguf"
    panel.load_button.click()
    panel.wait()
    assert "model file not found: /nope/model.gguf" in panel.status.value
    other = tmp_path / "other.gguf"
    shutil.copy(EMBEDDED_DIR / "model.gguf", other)
    panel.model.value = str(other)
    panel.engine.value = "llamacpp"
    panel.load_button.click()
    panel.wait()
    assert "llamacpp · other.gguf" in panel.status.value and session.ref.path == other
    panel.engine.value = "openai"
    panel.url.value = "http://127.0.0.1:9/v1"
    panel.load_button.click()
    panel.wait()
    assert "nothing is listening at http://127.0.0.1:9/v1" in panel.status.value
    panel.engine.value, panel.url.value, panel.model.value = "auto", "", ""
    panel.load_button.click()
    panel.wait()
    assert "tiny-shakespeare" in panel.status.value
    panel.max_tokens.value = 3
    panel.generate_button.click()
    panel.wait()
    assert "3 tokens" in panel.stats.value


def test_the_picker_shows_the_models_fit_before_a_load(panel, session, tmp_path):
    """Size, verdict and the largest context of the picked model, from its header: nothing loads."""
    loaded = session.ref
    panel.engine.value = "llamacpp"
    for name in ("", "tiny-shakespeare", "Embedded"):   # the names the picker and the loads give the embedded model
        panel.model.value = name
        shown = html.unescape(panel.fit.value)
        assert shown.startswith("<small>tiny-shakespeare: weights ") and " free RAM: fits; the largest context that fits is " in shown
    other = tmp_path / "other.gguf"
    shutil.copy(EMBEDDED_DIR / "model.gguf", other)
    panel.model.value = str(other)
    assert html.unescape(panel.fit.value).startswith("<small>other.gguf: weights ")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 8)
    panel.model.value = str(broken)
    assert "broken.gguf" in panel.fit.value and "weights" not in panel.fit.value   # the header's one line
    panel.model.value = "org/not-downloaded-GGUF"
    assert panel.fit.value == ""   # a Hub name: not planned at each key typed (v.fit plans it)
    assert session.ref == loaded   # nothing was loaded or freed
    panel.engine.value = "auto"


def test_cell_and_panel_share_one_session(panel, session, tmp_path):
    other = tmp_path / "from-a-cell.gguf"
    shutil.copy(EMBEDDED_DIR / "model.gguf", other)
    v.load(str(other), "llamacpp")  # as a cell would
    assert "from-a-cell.gguf" in panel.status.value and panel.model.value == "from-a-cell.gguf"
    held = v.stream("ROMEO:", max_tokens=50)  # a cell is generating
    next(held)
    panel.generate_button.click()
    panel.wait()   # the panel's thread has met the busy engine and finished
    assert "busy" in panel.status.value
    held.close()
    panel.max_tokens.value = 4
    panel.generate_button.click()
    panel.wait()
    assert "4 tokens" in panel.stats.value


def test_logprobs_control_shows_the_tokens(panel, session):
    panel.chat_mode.value, panel.temperature.value, panel.max_tokens.value = False, 0.0, 10
    panel.logprobs.value = 3
    panel.generate_button.click()
    panel.wait()
    res = session.last
    assert len(res.logprobs) == 10 and all(len(t.top) == 3 for t in res.logprobs)
    assert panel.tokens.value.count("<span style='background:") == 10
    panel.logprobs.value = -1
    panel.generate_button.click()
    panel.wait()
    assert session.last.logprobs is None and panel.tokens.value == ""


def test_chat_mode_history_and_clear(panel, session):
    session.history.clear()
    panel.chat_mode.value, panel.temperature.value, panel.max_tokens.value = True, 0.0, 12
    panel.system.value = "Thou art a herald."
    panel.prompt.value = "What news?"
    panel.generate_button.click()
    panel.wait()
    panel.prompt.value = "And then?"
    panel.generate_button.click()
    panel.wait()
    assert [m["role"] for m in session.history] == ["system", "user", "assistant", "user", "assistant"]
    assert "<b>user</b>: What news?" in panel.history.value
    panel.clear_button.click()
    assert session.history == [] and panel.history.value == ""


def test_bench_widget_runs_levels_table_plots_and_exports(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = BenchWidget()
    w.engines.value = ("llamacpp",)
    w.concurrency.value, w.requests.value, w.max_tokens.value = "1,2", 4, 8
    w.run_button.click()
    w.wait()
    assert w.status.value == "done" and w.progress.value == w.progress.max == 2
    assert len(w.result.summary) == 2 and "median_ttft_ms" in w.table.value
    assert bytes(w.plot.value).startswith(b"\x89PNG") and not w.export_button.disabled
    w.export_button.click()
    assert (tmp_path / "vllama_bench_summary.csv").exists() and (tmp_path / "vllama_bench_meta.json").exists()
    w.concurrency.value = "two"
    w.run_button.click()
    assert "concurrency takes whole numbers" in w.status.value


def test_the_adapter_picker_lists_the_added_adapters_and_generates_with_one(panel, session):
    from benchmarks.models import random_lora

    assert panel.lora.options == (("base model", ""),) and panel.sampling().lora is None
    panel.max_tokens.value, panel.temperature.value = 12, 0.0
    panel.generate_button.click()
    panel.wait()
    base = panel.output.value
    session.lora_add(random_lora(EMBEDDED_DIR / "model.gguf"), name="rnd")
    try:
        assert [v for _, v in panel.lora.options] == ["", "rnd"]   # the session told the panel
        panel.lora.value = "rnd"
        assert panel.sampling().lora == "rnd"
        panel.generate_button.click()
        panel.wait()
        assert panel.output.value != base and "LoRA rnd" in panel.stats.value
    finally:
        session.lora_remove("rnd")
    assert panel.lora.options == (("base model", ""),) and panel.sampling().lora is None   # gone, back to the base
