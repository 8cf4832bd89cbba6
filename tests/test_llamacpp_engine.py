"""The llama.cpp engine on the embedded model: streaming, timings, cancel, UTF-8, stops, chat."""
import os
import signal

import pytest

from vllama_jupyter import Sampling
from vllama_jupyter.engines.llamacpp import Detokenizer

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
    with pytest.raises(KeyboardInterrupt):
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
