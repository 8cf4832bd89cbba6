"""v.batch on llama.cpp decodes its prompts together (llamacpp_batch): each sequence keeps its own
seed, grammar, stops, banned text and logprobs; sequences join as others end; an interrupt leaves
the engine as it was; parallel=1 runs them in turn. Real engine, the embedded model and a model
with Qwen's real 151,936-token vocabulary."""
import json
import re
import threading

import pytest

import vllama_jupyter as v
from benchmarks.models import chat_model
from vllama_jupyter import Sampling
from vllama_jupyter.bench.kernel import of_type, stream_text
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.session import get_session

from .helpers import succeeded

NAMES = ["ROMEO", "JULIET", "TYBALT", "NURSE", "MERCUTIO", "BENVOLIO", "CAPULET", "MONTAGUE", "PRINCE", "FRIAR",
         "PARIS", "PETER", "SAMPSON", "GREGORY", "ABRAHAM", "BALTHASAR"]
PROMPTS = [f"{n}:\n" for n in NAMES] + [f"{n}:\nO " for n in NAMES[:4]]   # 20: more than run at once


def alone(engine, prompts, s):
    return [engine._complete(p, s).run() for p in prompts]


def test_greedy_batched_equals_one_at_a_time_and_the_record_says_parallel(engine):
    s = Sampling(max_tokens=48, temperature=0, ignore_eos=True)
    together = engine.batch(PROMPTS, s)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone(engine, PROMPTS, s)]
    assert all(r.output_tokens == 48 and r.finish_reason == "length" for r in together)
    assert {r.record["parallel"] for r in together} == {16}
    assert all(r.ttft is not None and r.ttft >= 0 for r in together)


def test_greedy_on_a_real_vocabulary():
    model = str(chat_model("Qwen-Qwen3-0.6B"))
    v.load(model, "llamacpp")
    try:
        eng = get_session().engine
        s = Sampling(max_tokens=24, temperature=0, ignore_eos=True)
        prompts = PROMPTS[:8]
        assert [r.token_ids for r in eng.batch(prompts, s)] == [r.token_ids for r in alone(eng, prompts, s)]
    finally:
        v.load(None, "llamacpp")


def test_each_sequence_keeps_its_own_seed(engine):
    s = Sampling(max_tokens=40, temperature=0.9, seed=11)
    a, b = engine.batch(PROMPTS, s), engine.batch(PROMPTS, s)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]   # reproducible, request by request
    assert len({tuple(r.token_ids) for r in a}) > 10   # each prompt its own text
    unseeded = engine.batch(PROMPTS[:4], Sampling(max_tokens=20, temperature=0.9))
    seeds = [r.record["sampling"]["seed"] for r in unseeded]
    assert len(set(seeds)) == 4   # each its own, recorded so that it can be repeated
    again = [engine.batch([p, p], Sampling(max_tokens=20, temperature=0.9, seed=x))[0]
             for p, x in zip(PROMPTS[:4], seeds)]
    assert [r.token_ids for r in unseeded] == [r.token_ids for r in again]


def test_stops_max_tokens_and_end_of_text_per_sequence(engine):
    s = Sampling(max_tokens=60, temperature=0, stop=["\n"])
    together = engine.batch(PROMPTS, s)
    by_one = alone(engine, PROMPTS, s)
    assert [(r.text, r.finish_reason) for r in together] == [(r.text, r.finish_reason) for r in by_one]
    assert {r.finish_reason for r in together} <= {"stop", "length"} and all("\n" not in r.text for r in together)
    lengths = engine.batch(PROMPTS[:6], Sampling(max_tokens=7, temperature=0, ignore_eos=True))
    assert [r.output_tokens for r in lengths] == [7] * 6


def test_logprobs_grammar_schema_and_banned_text_per_sequence(engine):
    s = Sampling(max_tokens=6, temperature=0, logprobs=3)
    for a, b in zip(engine.batch(PROMPTS[:5], s), alone(engine, PROMPTS[:5], s)):
        assert [t.token for t in a.logprobs] == [t.token for t in b.logprobs]
        assert max(abs(x.logprob - y.logprob) for x, y in zip(a.logprobs, b.logprobs)) < 1e-2   # the last bits differ
        assert all(len(t.top) == 3 for t in a.logprobs)
    schema = {"type": "object", "properties": {"name": {"enum": ["ROMEO", "JULIET"]}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    for r in engine.batch(PROMPTS[:6], Sampling(max_tokens=60, temperature=0.8, seed=3, json_schema=schema)):
        data = json.loads(r.text)
        assert data["name"] in ("ROMEO", "JULIET") and isinstance(data["age"], int)
    for r in engine.batch(PROMPTS[:6], Sampling(max_tokens=30, temperature=0, grammar='root ::= [A-Z]{3,9} "."')):
        assert re.fullmatch(r"[A-Z]{3,9}\.", r.text), r.text
    plain = engine.batch(PROMPTS[:6], Sampling(max_tokens=30, temperature=0))
    word = next(w for r in plain for w in r.text.split() if len(w) > 3)
    for r in engine.batch(PROMPTS[:6], Sampling(max_tokens=30, temperature=0, banned=(word,), min_tokens=25)):
        assert word not in r.text and r.output_tokens >= 25


def test_fewer_at_once_and_one_at_a_time(engine, session):
    s = Sampling(max_tokens=16, temperature=0, ignore_eos=True)
    expected = [r.token_ids for r in alone(engine, PROMPTS, s)]
    try:
        session.load(None, "llamacpp", parallel=3)
        assert v.status()["parallel"] == 3
        got = v.batch(PROMPTS, s)
        assert [r.token_ids for r in got] == expected and {r.record["parallel"] for r in got} == {3}
        session.load(None, "llamacpp", parallel=1)
        got = v.batch(PROMPTS, s)
        assert [r.token_ids for r in got] == expected and all("parallel" not in r.record for r in got)
        for bad in (0, -2, 1.5, "many", 10_000):
            with pytest.raises(VllamaError, match="parallel must be"):
                session.load(None, "llamacpp", parallel=bad)
        assert v.status()["parallel"] == 1   # the engine as it was
    finally:
        session.load(None, "llamacpp")


def test_an_interrupt_during_a_batch_leaves_the_engine_as_it_was(kernel):
    succeeded(kernel.execute("import vllama_jupyter as v\nv.load(None, 'llamacpp')\n"
                             "first = v.batch(['ROMEO:', 'JULIET:'], max_tokens=8, temperature=0)"))
    started = threading.Event()

    def interrupt_when_running(msg):
        if msg["msg_type"] == "stream" and "running" in msg["content"]["text"] and not started.is_set():
            started.set()
            threading.Timer(1.0, kernel.km.interrupt_kernel).start()
    msgs = kernel.execute("print('running', flush=True)\n"
                          "rs = v.batch(['ROMEO:'] * 32, max_tokens=100000, temperature=0, ignore_eos=True)",
                          on_msg=interrupt_when_running)
    assert msgs.status == "error" and any(m["content"]["ename"] == "KeyboardInterrupt" for m in of_type(msgs, "error"))
    succeeded(kernel.execute("again = v.batch(['ROMEO:', 'JULIET:'], max_tokens=8, temperature=0)\n"
                             "print([a.token_ids == b.token_ids for a, b in zip(first, again)])"))
    out = stream_text(kernel.execute("print([a.token_ids == b.token_ids for a, b in zip(first, again)])"))
    assert "[True, True]" in out
    status = stream_text(kernel.execute("%vllama status"))
    assert "batch() decodes 16 at once" in status and "idle" in status
