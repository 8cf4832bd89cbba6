"""Prompt-lookup speculative decoding on llama.cpp: the same tokens as without it (greedy, seeded,
under a grammar, with logprobs), drafts that are checked and counted, and one line for what it
cannot take. Real engines on the embedded model and a random-weight model with Qwen's vocabulary
(which repeats itself, so its drafts hold)."""
import pytest

from benchmarks.models import chat_model
from vllama_jupyter import Sampling
from vllama_jupyter.bench.kernel import Kernel, stream_text
from vllama_jupyter.engines.llamacpp import Engine
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.models import resolve

from .helpers import failed_line

EDIT = ("Rewrite this line with 'moon' for 'sun':\n"
        "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
        "But soft, what light through yonder window breaks? It is the east, and Juliet is the")


def pair(model: str):
    ref = resolve(model, "llamacpp")
    plain, drafted = Engine(), Engine()
    plain.load(ref, n_ctx=1024)
    drafted.load(ref, n_ctx=1024, speculative="ngram")
    return plain, drafted


@pytest.fixture(scope="module")
def embedded():
    engines = pair("embedded")
    yield engines
    for e in engines:
        e.close()


@pytest.fixture(scope="module")
def repeating():
    engines = pair(str(chat_model("Qwen-Qwen3-0.6B")))
    yield engines
    for e in engines:
        e.close()


@pytest.mark.parametrize("which", ["embedded", "repeating"])
def test_greedy_output_is_the_same_token_for_token(which, request):
    plain, drafted = request.getfixturevalue(which)
    s = Sampling(temperature=0, max_tokens=120, ignore_eos=True)
    for prompt in (EDIT, "ROMEO:"):
        a, b = plain.stream(prompt, s).run(), drafted.stream(prompt, s).run()
        assert b.text == a.text and b.output_tokens == a.output_tokens == 120
        counts = b.record["speculative"]
        assert counts["kind"] == "ngram" and 0 <= counts["accepted"] <= counts["drafted"]
        assert "speculative" not in a.record


def test_drafts_are_accepted_where_the_output_repeats(repeating):
    plain, drafted = repeating
    r = drafted.stream(EDIT, Sampling(temperature=0, max_tokens=200, ignore_eos=True)).run()
    counts = r.record["speculative"]
    assert counts["drafted"] >= 50 and counts["accepted"] / counts["drafted"] > 0.5, counts
    share = f"{counts['accepted'] / counts['drafted']:.0%} of {counts['drafted']} drafted tokens accepted"
    assert share in r.stats_line()
    assert drafted.info()["speculative"] == "ngram" and "speculative" not in plain.info()


def test_seeded_sampling_grammar_and_logprobs_are_unchanged(repeating):
    plain, drafted = repeating
    for s in (Sampling(temperature=0.8, seed=7, max_tokens=80, ignore_eos=True),
              Sampling(temperature=0, max_tokens=40, grammar='root ::= ("ab" | "cd" | " ")+'),
              Sampling(temperature=0, max_tokens=60, logprobs=3, ignore_eos=True)):
        a, b = plain.stream(EDIT, s).run(), drafted.stream(EDIT, s).run()
        assert b.text == a.text, s
        if s.logprobs:
            assert [x.token for x in b.logprobs] == [x.token for x in a.logprobs]
            assert max(abs(x.logprob - y.logprob) for x, y in zip(a.logprobs, b.logprobs)) < 0.01
            assert [[t for t, _ in x.top] for x in b.logprobs] == [[t for t, _ in x.top] for x in a.logprobs]


def test_a_chat_follow_up_reuses_the_cache_and_stays_the_same(repeating):
    plain, drafted = repeating
    msgs = [{"role": "user", "content": EDIT}]
    s = Sampling(temperature=0, max_tokens=40, ignore_eos=True)
    for e in (plain, drafted):
        first = e.chat(msgs, s).run()
        e.follow = e.chat(msgs + [{"role": "assistant", "content": first.text},
                                  {"role": "user", "content": "Again."}], s).run()
    assert drafted.follow.text == plain.follow.text


@pytest.mark.parametrize("value", ["eagle", "NGRAM", 1, True, ["ngram"]])
def test_unknown_kinds_are_one_line(value):
    with pytest.raises(VllamaError, match="is not a kind this engine knows: use speculative='ngram'"):
        Engine.check(resolve("embedded", "llamacpp"), {"speculative": value})


def test_the_magic_loads_with_speculation_and_refuses_what_it_cannot_take():
    k = Kernel()
    try:
        k.execute("%load_ext vllama_jupyter")
        assert k.execute("%vllama load embedded --engine llamacpp --speculative ngram").status == "ok"
        out = stream_text(k.execute("%%vllama -t 0 --max-tokens 60 -o r\nROMEO:\nROMEO:\nROMEO:"))
        assert "drafted tokens accepted" in out or "no drafts" in out, out
        assert k.value("r.record['speculative']['kind']") == "ngram"
        line = failed_line(k.execute("%vllama load embedded --engine llamacpp --speculative eagle"))
        assert "speculative='eagle' is not a kind this engine knows" in line
        assert k.value("__import__('vllama_jupyter').status()['speculative']") == "ngram"
        line = failed_line(k.execute("%vllama load m --url http://127.0.0.1:9/v1 --speculative ngram"))
        assert "--speculative is set on the server, not here: drop it for --engine openai" in line
        line = failed_line(k.execute("%vllama load embedded --speculative"))
        assert "--speculative: expected one argument" in line
    finally:
        k.stop()
