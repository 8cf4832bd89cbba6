"""The OpenAI-compatible engine against real servers on 127.0.0.1: llama-cpp-python's server and
`vllm serve`, both with the embedded model, started and stopped by these tests."""
import json
import os
import time

import httpx
import pytest

import vllama_jupyter as v
from vllama_jupyter import Sampling
from vllama_jupyter.engines.openai import Engine
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.servers import free_port, make
from .helpers import needs_vllm, wait_gone
from .insight import check_embed, check_fit_context, check_logprobs, check_record_and_replay

KEY_ENV = "VLLAMA_TEST_API_KEY"
KEY = "sk-test-7d1e0c93b1f54e2c"
GREEDY = Sampling(max_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def llama_server():
    os.environ[KEY_ENV] = KEY
    server = make("llamacpp", api_key_env=KEY_ENV, n_ctx=8192).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(llama_server):
    eng = Engine.connect(url=llama_server.url, preset="llamacpp-server", api_key_env=KEY_ENV)
    yield eng
    eng.close()


def test_streaming_equals_non_streaming_and_usage(remote, engine):
    streamed = remote.generate("ROMEO:\n", GREEDY)
    whole = remote.complete("ROMEO:\n", GREEDY)
    assert streamed.text == whole.text and len(streamed.text) > 40
    assert streamed.output_tokens == whole.output_tokens == 40
    assert whole.prompt_tokens == len(engine.tokenize("ROMEO:\n"))
    # the same model in-process gives the same greedy text
    assert engine.generate("ROMEO:\n", GREEDY).text == streamed.text
    assert 0 < streamed.ttft <= streamed.e2el


def test_chat_and_status_hide_the_key(remote):
    reply = remote.chat([{"role": "user", "content": "Who goes there?"}], Sampling(max_tokens=12, temperature=0.0)).run()
    assert reply.output_tokens > 0
    info = remote.info()
    assert info["api_key"] == f"from ${KEY_ENV}"
    assert KEY not in repr(info) and KEY not in repr(remote) and KEY not in repr(vars(remote))


@pytest.fixture(scope="module")
def embedding_server():
    """llama-cpp-python's server answers /v1/embeddings only when started with --embedding."""
    server = make("llamacpp", extra_args=["--embedding", "true"]).start()
    yield server
    server.stop()


def test_logprobs_record_replay_count_and_overflow(remote, engine, capsys):
    check_logprobs(remote)
    rec = check_record_and_replay(remote)
    assert rec["server"] == remote.url and rec["engine_version"] == "llama-cpp-python server"
    for text in ("ROMEO:", "What light through yonder window breaks?", "ünïcödé ✓"):
        n = remote.count_tokens(text)
        assert n == len(engine.tokenize(text))                    # the same model's tokenizer
        assert n == remote.complete(text, Sampling(max_tokens=1)).prompt_tokens   # the server's own count
    # chat context fitting through the server's token counts (its context given: it lists none)
    small = Engine.connect(url=remote.url, preset="llamacpp-server", api_key_env=KEY_ENV, context_length=1024)
    assert small.context_length() == 1024
    fitted = check_fit_context(small, capsys)
    reply = small.chat(fitted, Sampling(max_tokens=20, temperature=0.0)).run()
    assert reply.output_tokens > 0
    small.close()


def test_embeddings_from_a_real_server(embedding_server, engine):
    eng = Engine.connect(url=embedding_server.url, preset="llamacpp-server")
    try:
        check_embed(eng)
        texts = ["ROMEO: I am here.", "JULIET: Wherefore art thou?"]
        assert float((eng.embed(texts) * engine.embed(texts)).sum(axis=1).min()) > 0.999   # mean pooling both
    finally:
        eng.close()


def test_cancel_frees_the_server_slot(remote):
    stream = remote.stream("ROMEO:\n", Sampling(max_tokens=7000, temperature=0.0))
    t0 = time.perf_counter()
    for i, _ in enumerate(stream):
        if i == 20:
            break
    per_token = (time.perf_counter() - t0) / 20
    stream.close()
    assert stream.result.finish_reason == "cancelled"
    t1 = time.perf_counter()
    nxt = remote.generate("JULIET:\n", Sampling(max_tokens=5, temperature=0.0))
    waited = time.perf_counter() - t1
    assert nxt.output_tokens == 5
    # had the slot stayed busy, the next request would wait for ~6,980 more tokens
    assert waited < 0.25 * per_token * 6980, (waited, per_token)


def test_batch_of_16_concurrent(remote):
    prompts = [f"{n}:\n" for n in ("ROMEO", "JULIET", "TYBALT", "NURSE")] * 4
    results = remote.batch(prompts, Sampling(max_tokens=8, temperature=0.0))
    assert len(results) == 16 and all(r.output_tokens == 8 for r in results)
    assert results[0].text == results[4].text


def test_errors_are_one_line_and_the_session_stays_usable(llama_server, session):
    before = session.engine
    port = free_port()
    cases = [
        (dict(url=f"http://127.0.0.1:{port}/v1"), None, "nothing is listening at"),
        (dict(url=llama_server.url, api_key_env=KEY_ENV), "no-such-model", "has no model 'no-such-model'"),
        (dict(url=llama_server.url), None, "refused the API key (401)"),
        (dict(url=llama_server.url, preset="nope"), None, "unknown server preset 'nope'"),
        (dict(url=llama_server.url, api_key_env="VLLAMA_UNSET_VARIABLE"), None, "is not set"),
    ]
    os.environ["VLLAMA_WRONG_KEY"] = "wrong"
    cases.append((dict(url=llama_server.url, api_key_env="VLLAMA_WRONG_KEY"), None, "refused the API key (401): check the key in $VLLAMA_WRONG_KEY"))
    for opts, model, words in cases:
        with pytest.raises(VllamaError) as e:
            Engine.connect(model, **opts)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert KEY not in str(e.value)
    assert session.engine is before
    assert session.generate("ROMEO:", max_tokens=3, temperature=0).output_tokens == 3


def test_server_killed_mid_stream(session):
    server = make("llamacpp", n_ctx=8192).start()
    eng = Engine.connect(url=server.url, preset="llamacpp-server")
    stream = eng.stream("ROMEO:\n", Sampling(max_tokens=7000, temperature=0.0))
    with pytest.raises(VllamaError) as e:
        for i, _ in enumerate(stream):
            if i == 10:
                server.proc.kill()
                server.proc.wait()
    assert "broke mid-answer" in str(e.value) or "nothing is listening" in str(e.value)
    assert stream.result.finish_reason == "error" and stream.result.output_tokens >= 10
    with pytest.raises(VllamaError, match="nothing is listening"):
        eng.generate("ROMEO:\n", GREEDY)
    eng.close()
    server.stop()


def test_a_port_taken_before_the_server_binds_it_is_picked_again():
    """The race of a picked port: another process binds it between the pick and the server's bind.
    The server comes up on another port; a port the user chose that is taken is one line."""
    import socket

    server = make("llamacpp")
    taken = server.port
    with socket.socket() as other:
        other.bind(("127.0.0.1", taken))
        other.listen()
        try:
            server.start()
            assert server.port != taken and server.running and str(server.port) in server.cmd
            assert httpx.get(f"{server.url}/models").json()["data"][0]["id"] == server.model
        finally:
            server.stop()
        with pytest.raises(VllamaError) as e:
            make("llamacpp", port=taken).start()
        assert str(e.value) == (f"the llamacpp server could not listen on port {taken}: another process does; "
                                "choose another port, or leave it out for a free one")


def test_session_serve_load_and_unload_stop_the_server(session):
    srv = session.serve("llamacpp")
    try:
        assert session.choice.engine == "openai" and session.status()["path"] == srv.url
        assert v.generate("ROMEO:\n", max_tokens=6, temperature=0).output_tokens == 6
    finally:
        session.unload()
    assert not srv.running and not session.servers
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/models", timeout=2)
    session.load(None, "llamacpp")


def test_api_key_in_no_output_and_no_saved_notebook(llama_server, tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[
        new_code_cell("%load_ext vllama_jupyter"),
        new_code_cell(f"%vllama load --engine openai --url {llama_server.url} --preset llamacpp-server --api-key-env {KEY_ENV}"),
        new_code_cell("%vllama status"),
        new_code_cell("%%vllama -t 0 --max-tokens 10 -o r\nROMEO:\n"),
        new_code_cell("r, vars(r), __import__('vllama_jupyter').status(), __import__('vllama_jupyter').session.get_session()"),
        new_code_cell("%vllama load --engine openai --url " + llama_server.url + " --api-key-env VLLAMA_WRONG_KEY"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    env = dict(os.environ, VLLAMA_WRONG_KEY="another-secret-value")
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute(env=env)
    last = nb.cells[-1].outputs
    assert [o["output_type"] for o in last] == ["error"] and len(last[0]["traceback"]) == 1
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    text = path.read_text()
    assert "engine: openai" in text and "tokens/s" in text and "refused the API key (401)" in text
    assert KEY not in text and "another-secret-value" not in text


@pytest.mark.slow
@needs_vllm
def test_vllm_serve_stream_batch_cancel(engine):
    server = make("vllm").start(timeout=600)
    try:
        eng = Engine.connect(url=server.url, preset="vllm")
        streamed = eng.generate("ROMEO:\n", GREEDY)
        whole = eng.complete("ROMEO:\n", GREEDY)
        assert streamed.text == whole.text and streamed.output_tokens == whole.output_tokens == 40
        assert streamed.text == engine.generate("ROMEO:\n", GREEDY).text  # in-process llama.cpp agrees
        results = eng.batch(["ROMEO:\n", "JULIET:\n"] * 8, Sampling(max_tokens=16, temperature=0.0))
        assert len(results) == 16 and all(r.output_tokens == 16 for r in results)
        stream = eng.stream("ROMEO:\n", Sampling(max_tokens=900, temperature=0.0, ignore_eos=True))
        for i, _ in enumerate(stream):
            if i == 5:
                break
        stream.close()
        running = None
        for _ in range(50):  # the server notices the closed connection and aborts the request
            metrics = httpx.get(server.url.replace("/v1", "/metrics"), timeout=5).text
            running = sum(float(line.split()[-1]) for line in metrics.splitlines()
                          if line.startswith("vllm:num_requests_running"))
            if running == 0:
                break
            time.sleep(0.1)
        assert running == 0
        assert eng.generate("JULIET:\n", Sampling(max_tokens=4, temperature=0.0)).output_tokens == 4
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}, "required": ["name"]}
        out = eng.generate("KING LEAR:\n", Sampling(max_tokens=40, temperature=0.0, json_schema=schema))
        assert set(json.loads(out.text)) == {"name"}
        eng.close()
    finally:
        server.stop()
    assert not server.running


def test_served_process_dies_with_a_killed_kernel_and_its_logs_go():
    """A kernel killed hard (SIGKILL: no atexit) takes its server with it; its log folder is
    removed by the next kernel that starts a server."""
    from vllama_jupyter import servers
    from vllama_jupyter.bench.kernel import Kernel

    k = Kernel()
    try:
        assert k.execute("%load_ext vllama_jupyter\n%vllama serve llamacpp --no-load", timeout=120).status == "ok"
        srv = k.value("(lambda s: (s.proc.pid, s.url, str(s.log_path)))("
                      "__import__('vllama_jupyter').session.get_session().servers[0])")
        kernel_pid = k.value("__import__('os').getpid()")
        pid, url, log = srv
        assert httpx.get(f"{url}/models", timeout=5).status_code == 200 and os.path.exists(log)
        os.kill(kernel_pid, 9)
        gone = wait_gone(pid, 20)
        assert gone, f"server {pid} outlived its kernel"
    finally:
        k.stop()
    folder = os.path.dirname(log)
    assert os.path.isdir(folder)
    servers.log_folder()  # what every kernel does before it starts a server
    assert not os.path.exists(folder)
