"""v.batch on llama.cpp decodes its prompts together (llamacpp_batch): each sequence keeps its own
seed, grammar, stops, banned text and logprobs; sequences join as others end; an interrupt leaves
the engine as it was; parallel=1 runs them in turn. Real engine, the embedded model and a model
with Qwen's real 151,936-token vocabulary."""
import json
import re
import threading
from dataclasses import replace

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


def same_or_near_tie(engine, got, ref, margin=0.01) -> None:
    """`got` (decoded beside others) has the tokens, text and end of `ref` (the same request alone,
    with 2 alternatives per token), or they part at a near-tie: where the alone run's two likeliest
    tokens are within `margin` nats, batched arithmetic may pick the other one (as llama-server's
    slots may); `got`'s record says it ran batched."""
    if got.token_ids == ref.token_ids:
        assert (got.text, got.finish_reason) == (ref.text, ref.finish_reason)
        return
    i = next(j for j, (x, y) in enumerate(zip(got.token_ids, ref.token_ids)) if x != y)
    (_, first), (second_text, second) = ref.logprobs[i].top[:2]
    assert first - second < margin and engine.detokenize([got.token_ids[i]]) == second_text, \
        (i, ref.logprobs[i], engine.detokenize([got.token_ids[i]]))
    assert got.record["parallel"] > 1


def test_greedy_batched_equals_one_at_a_time_and_the_record_says_parallel(engine):
    s = Sampling(max_tokens=48, temperature=0, ignore_eos=True)
    together = engine.batch(PROMPTS, s)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone(engine, PROMPTS, s)]
    assert all(r.output_tokens == 48 and r.finish_reason == "length" for r in together)
    # each record: the most sequences it ran beside (the last 4 start as the first 16 end)
    assert [r.record["parallel"] for r in together] == [16] * 16 + [4] * 4
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
        assert [r.token_ids for r in got] == expected and [r.record["parallel"] for r in got] == [3] * 18 + [2] * 2
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
    assert "decodes up to 16 requests at once" in status and "idle" in status


# -- requests that come while others run (llamacpp_batch.Live) ---------------------------------------
def at_once(engine, prompts, s):
    """The prompts' streams started by threads at the same moment: the Results, in order."""
    gate, results = threading.Barrier(len(prompts)), {}

    def run(i):
        stream = engine._complete(prompts[i], s)
        gate.wait()
        results[i] = stream.run()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == len(prompts), "a request did not end"
    return [results[i] for i in range(len(prompts))]


def test_requests_that_come_together_decode_together_with_the_tokens_of_one_at_a_time(engine):
    """The first starts alone in the one-sequence loop and hands itself over to the batch as the
    others come (its KV cells, sampler and text state); greedy tokens, logprobs and stops are
    those of each request run alone, and each record says it ran beside 3 others."""
    for s in (Sampling(max_tokens=200, temperature=0, ignore_eos=True),
              Sampling(max_tokens=120, temperature=0, logprobs=2, stop=["\n\n"], ignore_eos=True)):
        together = at_once(engine, PROMPTS[:4], s)
        for a, b in zip(together, alone(engine, PROMPTS[:4], replace(s, logprobs=2))):
            same_or_near_tie(engine, a, b)
            if s.logprobs and a.token_ids == b.token_ids:
                assert [t.token for t in a.logprobs] == [t.token for t in b.logprobs]
        assert [r.record["parallel"] for r in together] == [4] * 4
        assert all(r.record["prompt_cache"] is False for r in together)


def test_a_request_that_leaves_early_frees_its_place_and_the_others_go_on(engine):
    s = Sampling(max_tokens=300, temperature=0, ignore_eos=True)
    streams = [engine._complete(p, s) for p in PROMPTS[:3]]
    firsts = [next(iter(st)) for st in streams]   # all three running (the first handed over)
    assert all(firsts)
    streams[1].close()
    rest = [st.run() for st in (streams[0], streams[2])]
    assert [r.output_tokens for r in rest] == [300, 300]
    assert rest[0].token_ids == alone(engine, PROMPTS[:1], s)[0].token_ids
    assert engine._complete("ROMEO:", Sampling(max_tokens=5, temperature=0)).run().output_tokens == 5


def test_parallel_1_takes_requests_in_turn(session):
    try:
        session.load(None, "llamacpp", parallel=1)
        assert not v.capabilities().concurrent
        s = Sampling(max_tokens=60, temperature=0, ignore_eos=True)
        got = at_once(session.engine, PROMPTS[:3], s)
        assert all("parallel" not in r.record for r in got)
        assert [r.token_ids for r in got] == [r.token_ids for r in alone(session.engine, PROMPTS[:3], s)]
    finally:
        session.load(None, "llamacpp")
    assert v.capabilities().concurrent and v.capabilities().parallel == 16


def test_a_bad_grammar_fails_its_request_only(engine):
    s = Sampling(max_tokens=80, temperature=0, ignore_eos=True)
    gate, got = threading.Barrier(3), {}

    def run(i, grammar):
        try:
            stream = engine._complete(PROMPTS[i], Sampling.make(s, grammar=grammar) if grammar else s)
            gate.wait()
            got[i] = stream.run().output_tokens
        except VllamaError as e:
            gate.wait()
            got[i] = str(e)
    threads = [threading.Thread(target=run, args=(i, g)) for i, g in enumerate([None, "root ::= (", None])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got[0] == got[2] == 80 and "grammar" in got[1] and "\n" not in got[1], got


def test_an_unload_while_four_clients_stream_ends_each_with_one_line(session):
    """Four `openai` clients stream from the share, decoded together; the owner unloads: each
    stream ends with the share's one line at its next token, and the engine is gone cleanly."""
    import openai

    session.load(None, "llamacpp", n_ctx=8192)   # room for four 1,500-token answers at once
    info = session.share()
    client = v.client(max_retries=0, timeout=120)
    started, errors = threading.Semaphore(0), {}

    def run(i):
        try:
            for n, _ in enumerate(client.completions.create(model=info["model"], prompt=PROMPTS[i], max_tokens=1500,
                                                            stream=True, extra_body={"ignore_eos": True})):
                if n == 0:
                    started.release()
            errors[i] = None
        except openai.APIError as e:
            errors[i] = e.message
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(4):
        assert started.acquire(timeout=60), "a stream did not start"
    session.unload()
    for t in threads:
        t.join(60)
    assert all("unloaded or reloaded it: this request was stopped" in (errors.get(i) or "") for i in range(4)), errors
    assert session.engine is None and not session.busy
