"""The llama.cpp engine on the embedded model: streaming, timings, cancel, UTF-8, stops, chat."""
import os
import signal

import pytest

from vllama_jupyter import Sampling
from vllama_jupyter.engines.llamacpp import Detokenizer

from .helpers import interruptible

GREEDY = Sampling(max_tokens=48, temperature=0.0)


def test_greedy_stream_joins_to_result(engine):
    stream = engine.stream("ROMEO:\n", GREEDY)
    deltas = list(stream)
    res = stream.result
    assert "".join(d.text for d in deltas) == res.text
    assert [t for d in deltas for t in d.token_ids] == res.token_ids
    assert res.output_tokens == 48 and res.finish_reason == "length"
    assert res.prompt_tokens == len(engine.tokenize("ROMEO:\n"))
    times = [d.t for d in deltas]
    assert times == sorted(times) and res.t_start <= times[0]
    assert 0 < res.ttft <= res.e2el
    assert res.tpot > 0 and res.tokens_per_s > 0
    assert len(res.itl) == len(times) - 1 and all(g >= 0 for g in res.itl)
    # the ids are the engine's own: detokenizing them gives the text back
    assert engine.detokenize(res.token_ids) == res.text


def test_greedy_is_deterministic_and_seed_repeats(engine):
    a, b = engine.generate("JULIET:\n", GREEDY), engine.generate("JULIET:\n", GREEDY)
    assert a.token_ids == b.token_ids
    s = Sampling(max_tokens=32, temperature=1.0, seed=11)
    assert engine.generate("JULIET:\n", s).token_ids == engine.generate("JULIET:\n", s).token_ids
    other = engine.generate("JULIET:\n", Sampling(max_tokens=32, temperature=1.0, seed=12))
    assert other.token_ids != engine.generate("JULIET:\n", s).token_ids


def test_embedded_model_writes_words(engine):
    text = engine.generate("KING HENRY:\nMy lords,", Sampling(max_tokens=80, temperature=0.0)).text
    words = [w for w in text.split() if w.isalpha()]
    assert len(words) >= 15, text


def test_close_mid_stream_stops_and_engine_stays_usable(engine):
    full = engine.generate("ROMEO:\n", GREEDY)
    stream = engine.stream("ROMEO:\n", Sampling(max_tokens=400, temperature=0.0))
    for i, _ in enumerate(stream):
        if i == 4:
            break
    stream.close()
    res = stream.result
    assert res.finish_reason == "cancelled" and 0 < res.output_tokens < 400
    assert list(stream) == []  # nothing more comes after close
    assert engine.generate("ROMEO:\n", GREEDY).token_ids == full.token_ids


def test_sigint_mid_stream_stops_within_a_token(engine):
    full = engine.generate("ROMEO:\n", GREEDY)
    seen = 0
    with interruptible(), pytest.raises(KeyboardInterrupt):
        with engine.stream("ROMEO:\n", Sampling(max_tokens=400, temperature=0.0)) as stream:
            for _ in stream:
                seen += 1
                if seen == 3:
                    os.kill(os.getpid(), signal.SIGINT)
    res = stream.result
    assert res.finish_reason == "interrupted"
    assert res.output_tokens <= 4
    assert engine.generate("ROMEO:\n", GREEDY).token_ids == full.token_ids


def test_multibyte_utf8_split_across_tokens_comes_out_whole(engine):
    text = "héllo wörld ☃ 日本語 — ça va"
    ids = engine.tokenize(text)[1:]  # drop BOS
    assert len(ids) > len(text.split())  # byte-fallback tokens split characters
    detok = Detokenizer(engine.llm)
    pieces = [detok.feed(t) for t in ids] + [detok.flush()]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces).strip() == text
    assert any(p == "" for p in pieces)  # some tokens held back until their character completed


def test_stop_sequence_cuts_text(engine):
    full = engine.generate("ROMEO:\n", Sampling(max_tokens=60, temperature=0.0)).text
    words = [w for w in full.split() if len(w) > 2]
    stop = words[len(words) // 2]
    cut = engine.generate("ROMEO:\n", Sampling(max_tokens=60, temperature=0.0, stop=(stop,)))
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_token_id_prompt_equals_text_prompt(engine):
    ids = engine.tokenize("ROMEO:\n")
    assert engine.generate(ids, GREEDY).token_ids == engine.generate("ROMEO:\n", GREEDY).token_ids


def test_batch_runs_each_prompt(engine):
    prompts = ["ROMEO:\n", "JULIET:\n", "KING RICHARD III:\n"]
    results = engine.batch(prompts, Sampling(max_tokens=12, temperature=0.0))
    assert [r.token_ids for r in results] == [engine.generate(p, Sampling(max_tokens=12, temperature=0.0)).token_ids
                                              for p in prompts]


def test_chat_uses_plain_template_and_history(session):
    session.history.clear()
    first = session.chat("Who goes there?", max_tokens=10, temperature=0.0).run()
    assert [m["role"] for m in session.history] == ["user", "assistant"]
    assert session.history[1]["content"] == first.text
    session.chat("Speak again.", max_tokens=10, temperature=0.0).run()
    assert len(session.history) == 4
    prompt = session.engine.chat_prompt(session.history)
    assert prompt.startswith("USER:\nWho goes there?") and prompt.endswith("ASSISTANT:\n")
    session.history.clear()


def test_info_reports_engine_and_model(engine):
    info = engine.info()
    assert info["engine"] == "llamacpp" and info["model"] == "tiny-shakespeare"
    assert info["context_length"] == 1024 and info["model_bytes"] > 1_000_000
    assert info["device"] == "cpu"


def test_json_schema_grammar_gives_json(engine):
    import json
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    res = engine.generate("KING LEAR:\n", Sampling(max_tokens=80, temperature=0.0, json_schema=schema))
    data = json.loads(res.text)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)


THREADS = r'''
import json, os, subprocess, sys, threading
from vllama_jupyter import Sampling
from vllama_jupyter.engines.llamacpp import Engine
from vllama_jupyter.engines.worker import shared
from vllama_jupyter.models import resolve

def cpus(tid):
    return os.sched_getaffinity(tid)

e = Engine()
e.load(resolve(None, "llamacpp"), n_ctx=256, n_threads=2, n_threads_batch=2)
e.generate("ROMEO:", Sampling(max_tokens=4, temperature=0.0))
mine = {t.native_id for t in threading.enumerate()}
worker = shared().call(threading.get_native_id)
team = [int(t) for t in os.listdir("/proc/self/task") if int(t) not in mine]
child = json.loads(subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps([sorted(os.sched_getaffinity(0)), "
                                   "[k for k in os.environ if k.startswith('OMP_')]]))"],
                                  capture_output=True, text=True).stdout)
print(json.dumps({"main": sorted(cpus(0)), "all": sorted(os.sched_getaffinity(os.getpid())), "worker": sorted(cpus(worker)),
                  "team": [sorted(cpus(t)) for t in team], "child": child,
                  "env": [k for k in os.environ if k.startswith("OMP_")]}))
'''


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="binding threads to cores needs two cores")
@pytest.mark.parametrize("user", [None, "false"])
def test_openmp_threads_bound_one_per_core_and_nothing_else(user, tmp_path):
    """llama.cpp's thread and its OpenMP partner each get a core of their own (a woken thread
    never waits behind its partner); the kernel's own thread, child processes and the
    environment stay as they were; a user's OMP_PROC_BIND=false is obeyed. In a fresh process:
    binding happens when libgomp loads."""
    import json
    import subprocess
    import sys

    # a fresh kernel's environment: vLLM, once used in this process, preloads torch's libgomp for
    # the processes started after it (LD_PRELOAD), which would be loaded before ours could bind
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_")) and k != "LD_PRELOAD"}
    if user:
        env["OMP_PROC_BIND"] = user
    out = subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    every = got["all"]
    assert got["main"] == every and got["child"][0] == every   # the kernel's thread, a server started later
    team = [c for c in got["team"] if len(c) == 1]
    if user == "false":
        assert got["worker"] == every and not team
        assert got["env"] == got["child"][1] == ["OMP_PROC_BIND"]
    else:
        assert len(got["worker"]) == 1 and len(team) == 1 and team[0] != got["worker"], got
        assert got["env"] == got["child"][1] == []


@pytest.mark.parametrize("shift", [0.0, 79.0, 200.0, -150.0, 1e4])
def test_log_softmax_top_matches_float64_reference(shift):
    """The per-token logprob arithmetic against float64's log-softmax, at the edges of float32's
    exponential: peaks near and past its overflow, all logits far below zero, ties, n of 0 and
    of the whole vocabulary."""
    import numpy as np

    from vllama_jupyter.engines.logprobs import log_softmax_top

    rng = np.random.default_rng(3)
    logits = (rng.normal(0, 4, 151_936) + shift).astype(np.float32)
    logits[[5, 77, 9000]] = logits.max() + 1   # a three-way tie at the top
    work = np.empty_like(logits)
    x = logits.astype(np.float64)
    ref = x.max() + np.log(np.exp(x - x.max()).sum())
    for n in (0, 1, 5, 20):
        lse, top = log_softmax_top(logits, n, work)
        assert abs(lse - ref) < 1e-4 * max(1.0, abs(ref)), (lse, ref)
        want = np.argsort(-x, kind="stable")[:n].tolist()
        assert top == want and len(top) == n
    for size, n in ((7, 7), (100_003, 20), (64 * 5 + 3, 5)):   # a vocabulary not a multiple of 64; n past a group's count
        part = logits[:size].copy()
        part[-1] = part.max() + 2   # the largest in the tail past the last whole group
        lse, top = log_softmax_top(part, n, np.empty_like(part))
        x = part.astype(np.float64)
        assert top == np.argsort(-x, kind="stable")[:n].tolist() and top[0] == size - 1
        assert abs(lse - (x.max() + np.log(np.exp(x - x.max()).sum()))) < 1e-3


CONTROLS = {"repetition_penalty": ("repeat_penalty", 1.3), "presence_penalty": ("presence_penalty", 0.4),
            "frequency_penalty": ("frequency_penalty", 0.3), "min_p": ("min_p", 0.05), "typical_p": ("typical_p", 0.9)}


@pytest.mark.parametrize("controls", [False, True], ids=["neutral", "penalties-min_p-typical_p"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_token_loop_gives_llama_cpp_pythons_own_tokens(engine, temperature, controls):
    """Our loop and sampler chain (the largest logit for greedy requests without controls, llama.cpp's
    sampler objects otherwise) against llama-cpp-python's generate() on the same context, 300
    tokens: with every control neutral, and with the controls its own sampler takes."""
    given = {name: v for name, (_, v) in CONTROLS.items()} if controls else {}
    theirs_kw = {"min_p": 0.0, "repeat_penalty": 1.0, **({their: v for their, v in CONTROLS.values()} if controls else {})}
    s = Sampling(max_tokens=300, temperature=temperature, seed=5, ignore_eos=True, **given)
    ours = engine.generate("ROMEO:\n", s).token_ids
    llm = engine.llm
    ids = engine.tokenize("ROMEO:\n")

    def theirs():
        llm.reset()
        llm.set_seed(5)
        out = []
        for tok in llm.generate(ids, temp=temperature, top_k=s.top_k, top_p=s.top_p, **theirs_kw):
            out.append(tok)
            if len(out) == 300:
                return out
    assert ours == engine._worker.call(theirs)
