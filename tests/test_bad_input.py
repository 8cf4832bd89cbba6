"""A catalogue of bad input through a real kernel: every case fails its cell with one short line
that names the problem and the fix, shows no traceback, and leaves the kernel alive and the
engine that was loaded before loaded, giving the same greedy output as before."""
import os
import shutil

import pytest

from vllama_jupyter import max_server
from vllama_jupyter.models import EMBEDDED_DIR, embedded

from .helpers import failed_line
from .hostile_server import HostileServer

KEY = "sk-catalogue-5e0c1d2f9a"

# (cell, words in the one line the user sees)
MAGIC_CASES = [
    ("%%vllama -m no-such-model\nhi", "unknown model 'no-such-model'"),
    ("%%vllama -m /nope/x.gguf\nhi", "model file not found: /nope/x.gguf"),
    ("%%vllama -m ~/nope/x.gguf\nhi", "model file not found"),
    ("%%vllama -e ollama\nhi", "unknown engine 'ollama'"),
    ("%%vllama --max-tokens 0\nhi", "max_tokens must be a whole number >= 1"),
    ("%%vllama --max-tokens -3\nhi", "max_tokens must be a whole number >= 1"),
    ("%%vllama --max-tokens abc\nhi", "argument --max-tokens: invalid int value: 'abc'"),
    ("%%vllama -t 9\nhi", "temperature must be between 0 and 2"),
    ("%%vllama -t -1\nhi", "temperature must be between 0 and 2"),
    ("%%vllama -t nan\nhi", "temperature must be between 0 and 2"),
    ("%%vllama --top-p 0\nhi", "top_p must be in (0, 1]"),
    ("%%vllama --top-p 1.5\nhi", "top_p must be in (0, 1]"),
    ("%%vllama --seed -1\nhi", "seed must be a whole number from 0 to 4294967295"),
    ("%%vllama --seed 4294967296\nhi", "seed must be a whole number from 0 to 4294967295"),
    ('%%vllama --stop ""\nhi', "each stop sequence must be a non-empty string"),
    ("%%vllama -f yaml\nhi", "argument -f/--format: invalid choice: 'yaml'"),
    ("%%vllama --max-tokns 5\nhi", "unrecognized arguments: --max-tokns 5"),
    ('%%vllama -s "unclosed\nhi', "could not read the options"),
    ("%%vllama\n", "the cell body is empty"),
    ("%%vllama\n   \n\t\n", "the cell is empty"),
    ("%%vllama\n" + "ROMEO: " * 900, "but the context holds 1024: shorten the prompt"),
    ("%%vllama --json-schema nope_not_json\nX", "neither a variable holding a schema nor JSON text"),
    ("%%vllama --json-schema '[1, 2]'\nX", "must be a JSON object schema, got list"),
    ("%%vllama --json-schema number_var\nX", "must be a JSON object schema, got int"),
    ("%%vllama --json-schema '{\"type\": \"bogus\"}'\nX", "cannot be turned into a grammar"),
    ("%%vllama -o 1abc\nhi", "-o/--out needs a variable name"),
    ("%%vllama -o a.b\nhi", "-o/--out needs a variable name"),
    ("%%vllama\n{bad_str} says", "{bad_str} cannot be turned into text"),
    ("%%vllama\n{lone_surrogate} says", "not valid Unicode"),
    ("%%vllama --chat\n   ", "the cell is empty"),
    ("%%vllama --logprobs 21\nhi", "logprobs must be a whole number from 0 to 20"),
    ("%%vllama --logprobs -1\nhi", "logprobs must be a whole number from 0 to 20"),
    ("%%vllama --logprobs x\nhi", "argument --logprobs: invalid int value: 'x'"),
    ("%%vllama tokens -x\nhi", "%%vllama tokens takes no options"),
    ("%%vllama tokens\n  \n", "nothing to count"),
    ("%vllama tokens", "nothing to count"),
    ("%vllama tokens {lone_surrogate}", "not valid Unicode"),
    ("%vllama record now", "unrecognized arguments: now"),
    ("%vllama frobnicate", "unknown subcommand 'frobnicate'"),
    ("%vllama load /nope/m.gguf", "model file not found"),
    ("%vllama load embedded --n-ctx 0", "n_ctx must be a whole number >= 16"),
    ("%vllama load embedded --n-ctx -1", "n_ctx must be a whole number >= 16"),
    ("%vllama load embedded --n-ctx 1000000000", "use a smaller n_ctx (the model was trained on 1,024)"),
    ("%vllama load embedded --n-ctx abc", "invalid int value: 'abc'"),
    ("%vllama load embedded --engine tensorrt", "unknown engine 'tensorrt'"),
    ("%vllama load embedded --frob", "unrecognized arguments: --frob"),
    ("%vllama load {truncated}", "is not a valid GGUF file"),
    ("%vllama load {corrupt}", "is not a valid GGUF file"),
    ("%vllama load {empty}", "is not a valid GGUF file"),
    ("%vllama load {unknown_arch}", "cannot run unknown-arch.gguf"),
    ("%vllama load {no_gguf_dir}", "holds no .gguf file, which llama.cpp needs"),
    ("%vllama load {missing_tensor}", "could not load missing-tensor.gguf: llama.cpp refused it "
     "(Failed to load model from file: {missing_tensor}; check_tensor_dims: tensor 'output_norm.weight' not found); "
     "tiny-shakespeare is loaded again"),
    ("%vllama load {hf_dir} --engine llamacpp", "it is a Hugging Face model folder: use engine='vllm'"),
    ("%vllama load embedded --url http://[::1", "cannot be read"),
    ("%vllama load --engine openai --url ftp://example.org/v1", "needs http:// or https://"),
    ("%vllama load --engine openai --url http://127.0.0.1:9/v1", "nothing is listening at http://127.0.0.1:9/v1"),
    ("%vllama load --engine openai --url {models-list}", "answered /models without a model list"),
    ("%vllama load --engine openai --url {models-null}", "answered /models without a model list"),
    ("%vllama load --engine openai --url {models-data-str}", "answered /models without a model list"),
    ("%vllama load --engine openai --url {models-empty}", "lists no models"),
    ("%vllama load --engine openai --url {models-html}", "answered /models with something that is not JSON"),
    ("%vllama load no-such --engine openai --url {ok}", "has no model 'no-such': it has hostile-model"),
    ("%vllama load --engine openai --url {ok} --api-key-env VLLAMA_UNSET_VARIABLE", "VLLAMA_UNSET_VARIABLE (api_key_env) is not set"),
    ("%vllama load --engine openai --url {ok} --preset nope", "unknown server preset 'nope'"),
    ("%vllama load embedded --url {ok} --engine llamacpp", "--url, --preset and --api-key-env go with --engine openai"),
    ("%vllama load embedded --engine openai --n-ctx 100", "--n-ctx is set on the server, not here"),
    ("%vllama serve llamacpp /nope/x.gguf", "model file not found"),
    ("%vllama serve tgi", "invalid choice: 'tgi'"),
    ("%vllama serve max {hf_dir}", "MAX on CPU takes float32, q4_k, q4_0, q6_k weights and hf holds float16: "
     "save a float32 copy"),
    ("%vllama serve max {max_crash}", "the max server exited with code 1 while starting: Worker crashed (Segmentation fault)"),
    ("%vllama serve max --api-key-env HOME", "MAX's server takes no API key"),
    ("%vllama load embedded --engine max", "MAX runs as a server here: %vllama serve max [MODEL]"),
    ("%vllama models /nope/folder", "/nope/folder is not a folder"),
    ("%vllama bench -c a,b", "--concurrency and --rate take comma-separated numbers"),
    ("%vllama bench -n 0", "num_requests must be a whole number >= 1"),
    ("%vllama bench --rate -2", "request_rate must be a positive number"),
    ("%%vllama --think maybe\nhi", "think must be True, False or one of low, medium, high"),
    ("%%vllama --think\nhi", "this model has no chat template, so it has no thinking switch"),
    ("%%vllama --no-think\nhi", "this model has no chat template, so it has no thinking switch"),
    ("%%vllama --max-thinking 0\nhi", "max_thinking must be a whole number >= 1"),
    ("%%vllama --max-thinking 8\nhi", "this model does not mark its thinking"),
    ("%%vllama --tools nope_fn\nhi", "--tools names notebook functions: 'nope_fn' is not a variable here"),
    ("%%vllama --tools number_var\nhi", "a tool must be a function, not int"),
    ("%%vllama --tools some_fn\nhi", "this model has no chat template, so it cannot be offered tools"),
    ("%%vllama --run-tools\nhi", "--run-tools needs --tools f,g"),
    ("%%vllama --tools some_fn --max-rounds 0\nhi", "max_rounds must be a whole number >= 1"),
    ("%%vllama --tool-choice required\nhi", "tool_choice='required' needs tools"),
    ("%%vllama --tools some_fn --tool-choice other\nhi", "tool_choice 'other' is neither auto, none, required nor one of the tools (some_fn)"),
    ("%%vllama --grammar 'root ::= ('\nhi", "llama.cpp cannot read this grammar (parse: error parsing grammar: expecting ')'"),
    ("%%vllama --grammar number_var\nhi", "--grammar 'number_var' names no variable holding GBNF text"),
    ("%%vllama --grammar '\\x' --json-schema '{}'\nhi", "give one constraint"),
]

API_CASES = [
    ("v.generate('ROMEO:', max_tokens=True)", "max_tokens must be a whole number >= 1"),
    ("v.generate(12345)", "the prompt must be text or a list of token ids, not int"),
    ("v.generate([1, 99999])", "token id 99999 is outside this model's vocabulary (0..2047)"),
    ("v.generate([1, -4])", "token id -4 is outside this model's vocabulary"),
    ("v.generate([])", "a token-id prompt must be a non-empty list of integers"),
    ("v.generate([1, 'a'])", "a token-id prompt must be a non-empty list of integers"),
    ("v.generate('x', temprature=1)", "unknown sampling option 'temprature'"),
    ("v.generate('x', seed=2**40)", "seed must be a whole number from 0 to 4294967295"),
    ("v.generate('x', json_schema='{}')", "json_schema must be a dict"),
    ("v.generate('x', stop=[5])", "each stop sequence must be a non-empty string"),
    ("v.generate('x', temperature='hot')", "temperature must be between 0 and 2"),
    ("v.generate('\\ud800 lone')", "not valid Unicode"),
    ("v.batch('ROMEO:')", "batch needs a list of prompts, not str"),
    ("v.batch(5)", "batch needs a list of prompts, not int"),
    ("v.batch([])", "batch needs at least one prompt"),
    ("v.batch(x for x in [])", "batch needs at least one prompt"),
    ("v.batch(['ROMEO:', ''])", "prompt 1 of the batch: the prompt is empty"),
    ("v.batch([[1, 99999]])", "prompt 0 of the batch: token id 99999 is outside"),
    ("v.chat('')", "the message is empty"),
    ("v.chat(None)", "the message is empty"),
    ("v.chat(5)", "a chat message is text or a list of messages, not int"),
    ("v.chat([])", "no messages to send"),
    ("v.chat([{'role': 'robot', 'content': 'hi'}])", "message 0 (robot): role must be one of system, developer, user, assistant, tool"),
    ("v.chat([{'role': 'user'}])", "message 0 (user) has no content"),
    ("v.chat([{'role': 'user', 'content': 7}])", "message 0 (user): content must be text or a list of parts"),
    ("v.chat([{'role': 'user', 'content': [{'type': 'audio'}]}])", "content must be text or a list of parts"),
    ("v.chat([{'role': 'tool', 'content': 'x'}])", "message 0 (tool) needs the tool_call_id"),
    ("v.chat([{'role': 'user', 'content': 'x', 'tool_call_id': 'a'}])", "only tool messages carry a tool_call_id"),
    ("v.chat([{'role': 'assistant', 'tool_calls': [{'id': 'a', 'type': 'function', 'function': {'name': 'f', 'arguments': '[1'}}]}])",
     "arguments must be JSON text of an object"),
    ("v.chat([{'role': 'system', 'content': [{'type': 'image_url', 'image_url': {'url': 'data:,'}}]}])", "images go in user messages"),
    ("v.chat('hi', tools=5)", "tools must be a list of Python functions (or MCP servers), not int"),
    ("v.chat('hi', tools=[])", "tools is an empty list"),
    ("v.chat('hi', tools=[lambda x: x])", "a tool needs a name the model can call"),
    ("v.chat('hi', tools=[some_fn, some_fn])", "two tools are named 'some_fn'"),
    ("v.chat('hi', tools=[print])", "tool print takes *args or **kwargs"),
    ("v.chat('hi', think='loud')", "think must be True, False or one of low, medium, high"),
    ("v.chat('hi', think=1)", "think must be True, False or one of low, medium, high"),
    ("v.chat('hi', max_thinking=2.5)", "max_thinking must be a whole number >= 1"),
    ("v.generate('hi', think=True)", "think applies to chat"),
    ("v.load(None, 'llamacpp', n_cxt=10)", "unknown llama.cpp option 'n_cxt'"),
    ("v.load(None, 'llamacpp', n_ctx='big')", "n_ctx must be a whole number >= 16"),
    ("v.load(None, 'llamacpp', n_ctx=2_000_000_000)", "use a smaller n_ctx"),
    ("v.load(None, 'llamacpp', type_k=12345)", "type_k must be a KV cache type number: 0 (f32), 1 (f16)"),
    ("v.load('{missing_tensor}', 'llamacpp')", "tiny-shakespeare is loaded again"),
    ("import os; os.environ['VLLAMA_MAX'] = '/nope/max'\ntry:\n    v.serve('max')\nfinally:\n    del os.environ['VLLAMA_MAX']",
     "VLLAMA_MAX=/nope/max is not a program: point it at MAX's max command"),
    ("v.load(None, 'openai', url='http://[::1')", "cannot be read"),
    ("v.load(None, 'openai', url='{ok}', concurrency=0)", "concurrency must be a whole number >= 1"),
    ("v.load(None, 'openai', url='{ok}', timeout=-1)", "timeout must be a positive number"),
    ("v.load(42, 'openai', url='{ok}')", "the model of a server is its name as text"),
    ("v.bench.run(num_requests=0)", "num_requests must be a whole number >= 1"),
    ("v.generate('x', logprobs=True)", "logprobs must be a whole number from 0 to 20"),
    ("v.generate('x', logprobs=2.5)", "logprobs must be a whole number from 0 to 20"),
    ("v.count_tokens(5)", "count_tokens needs text, not int"),
    ("v.count_tokens('\\ud800')", "not valid Unicode"),
    ("v.embed([])", "embed needs at least one text (the list is empty)"),
    ("v.embed(5)", "embed needs a list of texts, not int"),
    ("v.embed(None)", "embed needs a list of texts, not NoneType"),
    ("v.embed(['a', ''])", "text 1 to embed is empty"),
    ("v.embed(['a', 3])", "text 1 to embed is int"),
    ("v.embed(['a', 'ROMEO ' * 2000])", "tokens but the embedding context holds 1024: split it"),
]

# a stream from a hostile server, through an engine connected outside the session
STREAM_CASES = [
    ("no-done", "closed the stream after 2 chunks without finishing it: the output is truncated"),
    ("empty-stream", "closed the stream after 0 chunks without finishing it"),
    ("random-bytes", "without finishing it"),
    ("list-chunk", "malformed stream: a chunk that is a list"),
    ("choices-int", "malformed stream: choices that are a int"),
    ("choice-str", "malformed stream: a choice that is a str"),
    ("usage-str", "malformed stream: usage 'abc'"),
    ("usage-neg", "without whole-number token counts"),
    ("text-int", "malformed stream: text that is a int (5)"),
    ("ids-bad", "token_ids that are not a list of whole numbers"),
    ("finish-int", "a finish_reason that is a int"),
    ("not-json", "malformed stream (not JSON)"),
    ("mid-error", "failed mid-stream: out of memory"),
    ("not-sse", "did not answer with an event stream"),
    ("html-500", "failed (HTTP 500)"),
    ("echo-key-400", "refused the request (HTTP 400): bad request; you sent Bearer ***"),
    ("echo-key-503", "failed (HTTP 503)"),
    ("echo-key-long", "refused the request (HTTP 400): bad request; xxxx"),
]
# other requests to a hostile server: (mode|call, words)
REMOTE_CASES = [
    ("ok|hostile.generate('ROMEO:', v.Sampling(logprobs=2))", "sent no logprobs: it does not support them"),
    ("lp-str|hostile.generate('ROMEO:', v.Sampling(logprobs=2))", "logprobs that are a str, not an object"),
    ("lp-positive|hostile.generate('ROMEO:', v.Sampling(logprobs=2))", "a logprob 5.0 that is not a number <= 0"),
    ("lp-len|hostile.generate('ROMEO:', v.Sampling(logprobs=2))", "not lists of one length"),
    ("lp-top-list|hostile.generate('ROMEO:', v.Sampling(logprobs=2))", "top_logprobs entries that are not objects"),
    ("ok|hostile.count_tokens('hi')", "has no tokenize endpoint, so its token counts are not known"),
    ("tok-garbage|hostile.count_tokens('hi')", "a /tokenize answer without a list of token ids"),
    ("tok-html|hostile.count_tokens('hi')", "answered /tokenize with something that is not JSON"),
    ("ok|hostile.embed(['a'])", "has no such model or endpoint (404)"),
    ("emb-garbage|hostile.embed(['a'])", "sent malformed embeddings"),
    ("emb-nan|hostile.embed(['a'])", "sent malformed embeddings"),
    ("emb-none|hostile.embed(['a', 'b'])", "sent malformed embeddings"),
]
CHAT_CASES = [
    ("delta-list", "a delta that is a list, not an object"),
    ("delta-content-int", "text that is a int (7), not a string"),
]


@pytest.fixture(scope="module")
def hostile():
    with HostileServer() as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    data = (EMBEDDED_DIR / "model.gguf").read_bytes()
    (d / "truncated.gguf").write_bytes(data[: len(data) // 2])
    (d / "corrupt.gguf").write_bytes(b"not a gguf file at all" * 100)
    (d / "empty.gguf").write_bytes(b"")
    # a valid header whose architecture this llama.cpp does not know
    (d / "unknown-arch.gguf").write_bytes(data.replace(b"\x05\x00\x00\x00\x00\x00\x00\x00llama",
                                                       b"\x05\x00\x00\x00\x00\x00\x00\x00zzzzz", 1))
    # a header and vocabulary llama.cpp reads, with a tensor missing: it fails only when loading
    (d / "missing-tensor.gguf").write_bytes(data.replace(b"output_norm.weight", b"output_norm.weighx", 1))
    (d / "nothing").mkdir()
    (d / "nothing" / "README.txt").write_text("no model here")
    return {"truncated": d / "truncated.gguf", "corrupt": d / "corrupt.gguf", "empty": d / "empty.gguf",
            "unknown_arch": d / "unknown-arch.gguf", "missing_tensor": d / "missing-tensor.gguf", "no_gguf_dir": d / "nothing", "hf_dir": EMBEDDED_DIR / "hf"}


@pytest.fixture(scope="module")
def max_crash(tmp_path_factory):
    """A float32 model folder whose weights stop halfway: MAX's model worker crashes while loading it
    (made only for the MAX cases: it needs MAX's model folder, so safetensors)."""
    crash = tmp_path_factory.mktemp("bad-max") / "max-crash"
    shutil.copytree(max_server.model_folder(embedded("hf"), "cpu"), crash)
    weights = (crash / "model.safetensors").read_bytes()
    (crash / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    return crash


@pytest.fixture(scope="module")
def k(kernel):
    kernel.execute("import vllama_jupyter as v\n"
                   "import vllama_jupyter.bench\n"
                   "from vllama_jupyter.engines.openai import Engine\n"
                   "class Bad:\n    def __str__(self): raise RuntimeError('no')\n"
                   "bad_str = Bad(); lone_surrogate = '\\ud800'; number_var = 5\n"
                   "def some_fn(x: int) -> int:\n    return x\n")
    return kernel


def fill(cell: str, files: dict, hostile) -> str:
    out = cell
    for key, path in files.items():
        out = out.replace("{" + key + "}", str(path))
    for mode in ("ok", "models-list", "models-null", "models-empty", "models-html", "models-data-str"):
        out = out.replace("{" + mode + "}", hostile.url(mode))
    return out


def engine_state(k) -> tuple:
    """Which engine object is loaded, and its greedy output."""
    msgs = k.execute("%%vllama -t 0 --max-tokens 12 --quiet -o _check\nROMEO:\n")
    assert msgs.status == "ok", msgs
    return (k.value("id(__import__('vllama_jupyter').session.get_session().engine)"),
            k.value("__import__('vllama_jupyter').session.get_session().ref.name"), k.value("_check.text"))


def check_case(k, cell: str, words: str, before: tuple) -> None:
    # MAX compiles the model before a broken one crashes it: minutes in a fresh compile cache
    line = failed_line(k.execute(cell, timeout=580 if "serve max" in cell else 300))
    print(f"\n{cell[:70]!r} -> {line}")  # the catalogue as the user sees it (pytest -s)
    assert words in line, (cell[:80], line)
    assert len(line) < 400, line
    assert KEY not in line and not any(KEY[i:i + 5] in line for i in range(len(KEY) - 4)), line   # not even in part
    after = engine_state(k)
    if "is loaded again" in words:  # the load failed after the old engine was freed: the same model is back
        assert after[1:] == before[1:], cell[:80]
    else:
        assert after == before, cell[:80]


CATALOGUE = ([("magic", c, w) for c, w in MAGIC_CASES] + [("api", c, w) for c, w in API_CASES]
             + [("stream", m, w) for m, w in STREAM_CASES] + [("chat", m, w) for m, w in CHAT_CASES]
             + [("remote", m, w) for m, w in REMOTE_CASES])


def starts_max(case: str) -> bool:
    return "serve max" in case or "serve('max'" in case


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 60


@pytest.mark.parametrize("kind, case, words", [
    pytest.param(kind, case, words, marks=[pytest.mark.max] if starts_max(case) else [], id=f"{kind}:{case[:40]}")
    for kind, case, words in CATALOGUE])
def test_bad_input_fails_the_cell_with_one_line(k, files, hostile, kind, case, words, request):
    if "{max_crash}" in case:
        files = {**files, "max_crash": request.getfixturevalue("max_crash")}
    k.execute("%vllama load embedded --engine llamacpp")  # the engine every case starts from
    before = engine_state(k)
    assert before[1] == "tiny-shakespeare"
    os.environ.pop("VLLAMA_UNSET_VARIABLE", None)
    words = fill(words, files, hostile)
    if kind == "magic":
        cell = fill(case, files, hostile)
    elif kind == "api":
        cell = fill(case, files, hostile).replace("'{ok}'", repr(hostile.url("ok")))
    elif kind == "stream":
        k.execute(f"import os; os.environ['CATALOGUE_KEY'] = {KEY!r}\n"
                  f"hostile = Engine.connect(url={hostile.url(case)!r}, api_key_env='CATALOGUE_KEY')")
        cell = "hostile.generate('ROMEO:')"
    elif kind == "remote":
        mode, cell = case.split("|", 1)
        k.execute(f"hostile = Engine.connect(url={hostile.url(mode)!r})")
    else:
        k.execute(f"hostile = Engine.connect(url={hostile.url(case)!r})")
        cell = "hostile.chat([{'role': 'user', 'content': 'hi'}]).run()"
    check_case(k, cell, words, before)


def test_no_piece_of_the_key_survives_an_echo_cut_at_any_length(hostile, monkeypatch):
    """A server echoes the Authorization header and cuts its body; at every cut length the error
    line holds no piece of the key of 6 characters or more."""
    from vllama_jupyter import Sampling
    from vllama_jupyter.engines.openai import Engine
    from vllama_jupyter.errors import VllamaError

    monkeypatch.setenv("VLLAMA_CUT_KEY", KEY)
    echo = len(f"you sent Bearer {KEY} with it")
    pieces = {KEY[i:i + 6] for i in range(len(KEY) - 5)}
    for cut in range(echo + 1):
        eng = Engine.connect(url=hostile.url(f"echo-cut-{cut}"), api_key_env="VLLAMA_CUT_KEY")
        try:
            with pytest.raises(VllamaError) as e:
                eng.generate("ROMEO:", Sampling(max_tokens=2))
        finally:
            eng.close()
        line = str(e.value)
        assert "refused the request (HTTP 400)" in line and not any(p in line for p in pieces), (cut, line)
