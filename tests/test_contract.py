"""The engine contract, as a matrix: every declared option × every engine (llama.cpp and vLLM in
the process, llama-cpp-python's server through the openai engine, a share of each in-process
engine) × {generate, chat}, on the embedded model; the chat-only options also on a model whose
real template has a thinking switch and tool calls (Qwen3.5's, random weights), in the process and
through its share. Where the engine's capabilities say the option can be honoured, a check
observes its effect; where not, the call fails with one line naming the option. The matrix is
made from options.OPTIONS and engines.ENGINES: a new option or engine fails here until it has a
check and an engine under test."""
import functools
import json
import os

import pytest

from vllama_jupyter import engines
from vllama_jupyter.engines.openai import Engine as Remote
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.models import EMBEDDED_DIR
from vllama_jupyter.options import CHAT_ONLY, OPTIONS, SAMPLERS
from vllama_jupyter.sampling import Sampling
from vllama_jupyter.servers import make
from vllama_jupyter.session import Session

from benchmarks.models import chat_model, random_lora

from .helpers import needs_vllm

PROMPT = "ROMEO:\n"
MESSAGES = [{"role": "user", "content": "ROMEO:"}]
BASE = {"temperature": 0, "max_tokens": 16}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Where a character is.",
                                           "parameters": {"type": "object", "properties": {"name": {"enum": ["ROMEO", "JULIET"]}},
                                                          "required": ["name"]}}}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
TOKEN_ENV = "VLLAMA_TEST_CONTRACT_TOKEN"


def run(eng, mode: str, **options):
    s = Sampling(**{**BASE, **options})
    if mode == "generate":
        return eng.stream(PROMPT, s).run()
    return eng.chat(MESSAGES, s, TOOLS if options.get("tool_choice") else None).run()


# -- what each option does, observed ------------------------------------------------------------
def _max_tokens(eng, mode):
    r = run(eng, mode, max_tokens=3)
    assert (r.output_tokens, r.finish_reason) == (3, "length"), (r.output_tokens, r.finish_reason)


def _temperature(eng, mode):
    assert run(eng, mode, temperature=1.5, seed=1).text != run(eng, mode).text


def _top_p(eng, mode):   # a nucleus of one token is greedy, whatever the temperature
    assert run(eng, mode, temperature=1.5, seed=1, top_p=1e-6).text == run(eng, mode).text


def _top_k(eng, mode):
    assert run(eng, mode, temperature=1.5, seed=1, top_k=1).text == run(eng, mode).text


def _seed(eng, mode):
    a, b = (run(eng, mode, temperature=1.0, seed=3).text for _ in range(2))
    assert a == b and any(run(eng, mode, temperature=1.0, seed=k).text != a for k in (4, 5, 6))


def _stop(eng, mode):
    full = run(eng, mode).text
    word = full.strip().split()[2]
    r = run(eng, mode, stop=[word])
    assert r.text == full[:full.index(word)] and r.finish_reason == "stop", (full, word, r.text)


def _ignore_eos(eng, mode):   # the end of a grammar is the end of text: ignored, the request goes on
    g = 'root ::= "Hi"'
    assert run(eng, mode, grammar=g, max_tokens=6).output_tokens < 6
    r = run(eng, mode, grammar=g, max_tokens=6, ignore_eos=True)
    assert (r.output_tokens, r.finish_reason) == (6, "length")


def _json_schema(eng, mode):
    r = run(eng, mode, json_schema=SCHEMA, max_tokens=40)
    assert isinstance(json.loads(r.text)["a"], bool), r.text


def _grammar(eng, mode):
    assert run(eng, mode, grammar='root ::= "yes" | "no"').text in ("yes", "no")


def _logprobs(eng, mode):
    r = run(eng, mode, logprobs=2)
    assert len(r.logprobs) == r.output_tokens > 0 and all(len(t.top) == 2 for t in r.logprobs)


def _think(eng, mode):   # the switch is in the prompt: off closes the thought before the answer
    on, off = run(eng, mode, think=True, max_tokens=8), run(eng, mode, think=False, max_tokens=8)
    assert on.reasoning and not off.reasoning and off.prompt_tokens > on.prompt_tokens


def _max_thinking(eng, mode):   # this template opens the thought; random weights never close it
    r = run(eng, mode, max_thinking=4, max_tokens=24, ignore_eos=True)
    assert r.reasoning_tokens == 4 and r.text.strip(), (r.reasoning_tokens, r.text)


def _tool_choice(eng, mode):
    r = run(eng, mode, tool_choice="required", max_tokens=60)
    assert [c["function"]["name"] for c in r.tool_calls] == ["lookup"]


def _first_change(base, other) -> tuple[int, list[str]]:
    """Where `other`'s tokens leave greedy's, and greedy's tokens (texts, from logprobs)."""
    a, b = [t.token for t in base.logprobs], [t.token for t in other.logprobs]
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    assert i is not None, ("the control changed nothing", base.text)
    return i, a


def _penalty(name, value, n=48):
    def effect(eng, mode):   # greedy would repeat a token here; the penalty took another
        long = {"max_tokens": n, "logprobs": 0, "stop": ["@@"]}   # a chat turn's own stop: no end at a new line
        base, pen = (run(eng, mode, **long, **kw) for kw in ({}, {name: value}))
        i, a = _first_change(base, pen)
        assert a[i] in a[:i] or a[i] in PROMPT, (a[:i + 1], pen.text)
    return effect


def _repeat_last_n(eng, mode):   # a window of 0 turns the penalty off
    pen = {"repetition_penalty": 1.5, "max_tokens": 48}
    assert run(eng, mode, repeat_last_n=0, **pen).text == run(eng, mode, max_tokens=48).text != \
        run(eng, mode, repeat_last_n=64, **pen).text


def _min_p(eng, mode):   # only tokens as likely as the likeliest: greedy, whatever the temperature
    assert run(eng, mode, temperature=1.5, seed=1, min_p=1.0).text == run(eng, mode).text


def _typical_p(eng, mode):   # one typical token is left: the seed no longer matters
    a, b = (run(eng, mode, temperature=1.5, seed=k, typical_p=0.001).text for k in (1, 2))
    assert a == b != run(eng, mode, temperature=1.5, seed=1).text


@functools.cache
def token_id(text: str) -> int:
    """The embedded model's id of the one token `text` (every engine under test holds that model)."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(EMBEDDED_DIR / "model.gguf"), vocab_only=True, verbose=False)
    if text == "</s>":
        return vocab.token_eos()
    head = vocab.tokenize(b"\n")
    ids = vocab.tokenize(b"\n" + text.encode())[len(head):]
    assert len(ids) == 1, ids
    return ids[0]


def _logit_bias(eng, mode):   # +100 forces a token; a token's text works in the process, ids everywhere
    key = " the" if eng.capabilities().in_process else token_id(" the")
    r = run(eng, mode, logit_bias={key: 100})
    assert r.text == " the" * r.output_tokens and r.output_tokens == BASE["max_tokens"], r.text


def _min_tokens(eng, mode):   # the end of text, forced by a bias, comes only after min_tokens
    eos = {token_id("</s>"): 100}
    at_once = run(eng, mode, logit_bias=eos).output_tokens   # vLLM counts the end-of-text token, llama.cpp not
    assert at_once <= 1
    r = run(eng, mode, logit_bias=eos, min_tokens=5)
    assert (r.output_tokens, r.finish_reason) == (5 + at_once, "stop"), (r.output_tokens, r.finish_reason)


def _banned(eng, mode):
    full = run(eng, mode).text
    word = full.split()[2]
    r = run(eng, mode, banned=[word])
    assert r.text != full and word not in r.text.split(), (full, word, r.text)


def _lora(eng, mode):   # a random adapter moves the greedy text; the base comes back without it
    base = run(eng, mode).text
    assert run(eng, mode, lora=ADAPTER).text != base == run(eng, mode).text


XTC = {"temperature": 1.0, "seed": 1, "xtc_probability": 1.0}


def _xtc_probability(eng, mode):
    assert run(eng, mode, xtc_threshold=0.05, **XTC).text != run(eng, mode, temperature=1.0, seed=1).text


def _xtc_threshold(eng, mode):   # no two tokens are each above 0.5: nothing is cut
    assert run(eng, mode, xtc_threshold=0.5, **XTC).text == run(eng, mode, temperature=1.0, seed=1).text != \
        run(eng, mode, xtc_threshold=0.05, **XTC).text


EFFECTS = {"max_tokens": _max_tokens, "temperature": _temperature, "top_p": _top_p, "top_k": _top_k, "seed": _seed,
           "stop": _stop, "ignore_eos": _ignore_eos, "json_schema": _json_schema, "grammar": _grammar,
           "logprobs": _logprobs, "think": _think, "max_thinking": _max_thinking, "tool_choice": _tool_choice,
           "repetition_penalty": _penalty("repetition_penalty", 1.5), "repeat_last_n": _repeat_last_n,
           "presence_penalty": _penalty("presence_penalty", 1.5), "frequency_penalty": _penalty("frequency_penalty", 1.5),
           "min_p": _min_p, "typical_p": _typical_p, "logit_bias": _logit_bias, "min_tokens": _min_tokens,
           "banned": _banned, "dry_multiplier": _penalty("dry_multiplier", 2.0, 160), "xtc_probability": _xtc_probability,
           "xtc_threshold": _xtc_threshold, "lora": _lora}
# the value each refusal is tried with
TRIED = {"top_k": 5, "ignore_eos": True, "json_schema": SCHEMA, "grammar": 'root ::= "yes"', "logprobs": 2,
         "think": True, "max_thinking": 4, "tool_choice": "required", "repetition_penalty": 1.3, "repeat_last_n": 32,
         "presence_penalty": 0.5, "frequency_penalty": 0.5, "min_p": 0.1, "typical_p": 0.5, "logit_bias": {5: 5.0},
         "min_tokens": 3, "banned": ["the"], "dry_multiplier": 0.8, "xtc_probability": 0.5, "xtc_threshold": 0.2,
         "lora": "contract"}
ADAPTER = TRIED["lora"]   # added to each in-process engine that takes adapters (a random one)


def honoured(caps, name: str, mode: str) -> bool:
    """Whether the capabilities say option `name` can be honoured on a request of `mode`."""
    chat = mode == "chat"
    return {
        "think": chat and True in caps.think_values,
        "max_thinking": chat and caps.close_thought and caps.thinking is not None,
        "tool_choice": chat and caps.chat_template is not False and caps.tool_calls is not None,
        "top_k": caps.top_k, "ignore_eos": caps.ignore_eos, "grammar": caps.grammar,
        "json_schema": caps.json_schema, "logprobs": caps.logprobs, "lora": ADAPTER in caps.adapters,
        **{n: n in caps.samplers for n in SAMPLERS},
    }.get(name, True)


# -- the engines ----------------------------------------------------------------------------------
VLLM = [needs_vllm, pytest.mark.slow, pytest.mark.vllm]
KINDS = {"llamacpp": [], "vllm": VLLM, "llamacpp-server": [], "share-llamacpp": [], "share-vllm": VLLM}
TEMPLATED = ["llamacpp-qwen3.5", "share-llamacpp-qwen3.5"]   # for the chat-only options
CASES = ([pytest.param(k, o.name, marks=marks, id=f"{k}-{o.name}") for k, marks in KINDS.items() for o in OPTIONS] +
         [pytest.param(k, name, id=f"{k}-{name}") for k in TEMPLATED for name in CHAT_ONLY])
COVERS = {"llamacpp": "llamacpp", "vllm": "vllm", "llamacpp-server": "openai", "share-llamacpp": "openai",
          "share-vllm": "openai", "llamacpp-qwen3.5": "llamacpp", "share-llamacpp-qwen3.5": "openai"}
MODELS = {"llamacpp": None, "vllm": None, "llamacpp-qwen3.5": "Qwen3.5-4B"}   # None: the embedded model


@pytest.fixture(scope="module")
def made(vllm_session):
    """Engines made so far in this module (each once), closed at its end; the vLLM session is the
    run's (conftest), only its share ends here."""
    done: dict = {"_vllm": vllm_session}
    yield done
    for close in reversed(done.pop("_closers", [])):
        close()
    for name in [k for k in os.environ if k.startswith(TOKEN_ENV)]:
        os.environ.pop(name)


def _owner(made, kind: str) -> Session:
    """A session of its own with the kind's model loaded on its engine, shared."""
    key = f"session-{kind}"
    if key not in made:
        if kind == "vllm":
            s = made["_vllm"]()
            made.setdefault("_closers", []).append(s.stop_sharing)
        else:
            s = Session()
            s.load(MODELS[kind] and str(chat_model(MODELS[kind])), COVERS[kind])
            made.setdefault("_closers", []).append(s._shutdown)
            if s.engine.capabilities().lora:
                s.lora_add(random_lora(s.engine.ref.path), name=ADAPTER)
        s.share()
        made[key] = s
    return made[key]


@pytest.fixture(scope="module")
def engine_of(made):
    def get(kind: str):
        if kind in made:
            return made[kind]
        if kind in MODELS:
            eng = _owner(made, kind).engine
        elif kind == "llamacpp-server":
            server = make("llamacpp").start()
            made.setdefault("_closers", []).append(server.stop)
            eng = Remote.connect(url=server.url, preset="llamacpp-server")
            made["_closers"].append(eng.close)
        else:
            sharing = _owner(made, kind.removeprefix("share-")).sharing
            name = f"{TOKEN_ENV}_{kind.upper().replace('-', '_').replace('.', '_')}"   # each share its own
            os.environ[name] = sharing.token
            eng = Remote.connect(url=sharing.url, preset="vllama", api_key_env=name)
            made["_closers"].append(eng.close)
        made[kind] = eng
        return eng
    return get


def test_the_matrix_covers_every_option_and_engine():
    assert set(EFFECTS) == {o.name for o in OPTIONS}
    assert set(COVERS.values()) == set(engines.ENGINES)
    assert set(TRIED) >= {"think", "max_thinking", "tool_choice", "top_k", "ignore_eos", "grammar", "json_schema",
                          *SAMPLERS}


@pytest.mark.parametrize("mode", ["generate", "chat"])
@pytest.mark.parametrize("kind,name", CASES)
def test_each_option_is_honoured_or_refused_in_one_line(engine_of, kind, name, mode):
    eng = engine_of(kind)
    if honoured(eng.capabilities(), name, mode):
        EFFECTS[name](eng, mode)
        return
    with pytest.raises(VllamaError) as e:
        run(eng, mode, **{name: TRIED[name]})
    line = str(e.value)
    assert name in line and "\n" not in line, line
    assert run(eng, mode, max_tokens=2).output_tokens == 2   # the engine is as it was


def test_a_share_tells_its_clients_what_the_model_behind_it_can_do(engine_of):
    local, remote = engine_of("llamacpp").capabilities(), engine_of("share-llamacpp").capabilities()
    assert (remote.in_process, remote.engine, remote.shared_from) == (False, "openai", None)
    assert (remote.chat_template, remote.think_values, remote.context_length) == \
        (local.chat_template, local.think_values, local.context_length)
    assert not remote.close_thought   # the wire cannot carry a thinking budget


def test_private_llama_cpp_attributes_are_checked_at_load(engine_of, monkeypatch):
    from vllama_jupyter.engines import llama_private

    eng = engine_of("llamacpp")
    llama_private.check(eng.llm)   # this llama-cpp-python has them all
    monkeypatch.setitem(llama_private.USED, "_ctx.no_such_thing", "a test")
    with pytest.raises(VllamaError, match=r"has no Llama\._ctx\.no_such_thing .*install llama-cpp-python<="):
        llama_private.check(eng.llm)
