"""Every %%vllama option and %vllama subcommand, in a real kernel on the embedded model."""
import json
import re
import shutil

import pytest

from vllama_jupyter.models import EMBEDDED_DIR

from vllama_jupyter.bench.kernel import of_type, stream_text

from .helpers import failed_line


@pytest.fixture(scope="module")
def k(kernel):
    return kernel


def run(k, code):
    msgs = k.execute(code)
    assert not of_type(msgs, "error"), [m["content"]["traceback"] for m in of_type(msgs, "error")]
    return msgs


def shown(msgs):
    """The final MIME bundle the cell displayed."""
    return (of_type(msgs, "update_display_data") or of_type(msgs, "display_data"))[-1]["content"]["data"]


def one_error_line(msgs):
    return failed_line(msgs)


def test_greedy_seed_and_sampling_options(k):
    run(k, "%%vllama -t 0 --max-tokens 20 -o a\nROMEO:\n")
    run(k, "%%vllama -t 0 --max-tokens 20 -o b\nROMEO:\n")
    assert k.value("a.token_ids == b.token_ids and a.output_tokens == 20")
    run(k, "%%vllama -t 1.2 --top-p 0.9 --seed 5 --max-tokens 20 -o c\nROMEO:\n")
    run(k, "%%vllama -t 1.2 --top-p 0.9 --seed 5 --max-tokens 20 -o d\nROMEO:\n")
    run(k, "%%vllama -t 1.2 --top-p 0.9 --seed 6 --max-tokens 20 -o e\nROMEO:\n")
    assert k.value("c.token_ids == d.token_ids != e.token_ids")


def test_sampling_controls_as_flags_and_config(k):
    """The loop a small model falls into, and the one flag that breaks it; a token banned or forced
    by its text; the same control as a %config default; every one kept in the record."""
    run(k, "%%vllama -t 0 --max-tokens 48 -o plain\nROMEO:\n")
    run(k, "%%vllama -t 0 --max-tokens 48 --repetition-penalty 1.5 -o pen\nROMEO:\n")
    assert k.value("pen.text != plain.text and pen.record['sampling']['repetition_penalty'] == 1.5")
    run(k, "%%vllama -t 0 --max-tokens 6 --logit-bias ' the=100' -o forced\nROMEO:\n")
    assert k.value("forced.text") == " the" * 6
    run(k, "%%vllama -t 0 --max-tokens 48 --ban JULIET --min-tokens 3 --dry 0.8 -o ban\nROMEO:\n")
    assert k.value("'JULIET' in plain.text and 'JULIET' not in ban.text")
    assert k.value("[ban.record['sampling'][k] for k in ('banned', 'min_tokens', 'dry_multiplier')]") == \
        [["JULIET"], 3, 0.8]
    run(k, "%config VllamaMagics.repetition_penalty = 1.5")
    run(k, "%%vllama -t 0 --max-tokens 48 -o conf\nROMEO:\n")
    run(k, "%config VllamaMagics.repetition_penalty = 1.0")
    assert k.value("conf.text == pen.text")
    said = stream_text(k.execute("%config VllamaMagics.repetition_penalty = 0"), "stderr")   # %config logs it
    assert "repetition_penalty must be in (0, 2]" in said and k.value("get_ipython().find_magic('vllama').__self__"
                                                                       ".repetition_penalty") == 1.0


def test_config_traits(k):
    run(k, "%config VllamaMagics.max_tokens = 7")
    run(k, "%%vllama -t 0 -o r\nROMEO:\n")
    assert k.value("r.output_tokens") == 7
    run(k, "%config VllamaMagics.show_stats = False")
    msgs = run(k, "%%vllama -t 0 -o r\nROMEO:\n")
    assert "tokens/s" not in stream_text(msgs)
    run(k, "%config VllamaMagics.show_stats = True")
    run(k, "%config VllamaMagics.max_tokens = 256")
    out = stream_text(run(k, "%config VllamaMagics"))
    assert "VllamaMagics.throttle" in out and "VllamaMagics.engine" in out


def test_stop_sequences(k):
    run(k, "%%vllama -t 0 --max-tokens 60 -o full\nROMEO:\n")
    k.execute("import re; w = [x for x in re.findall(r'[A-Za-z]{3,}', full.text)]; s1 = w[len(w)//2]")
    run(k, '%%vllama -t 0 --max-tokens 60 --stop "{s1}" --stop "zzzq" -o cut\nROMEO:\n'.replace("{s1}", k.value("s1")))
    assert k.value("cut.text == full.text[:full.text.index(s1)] and cut.finish_reason == 'stop'")
    run(k, '%%vllama -t 0 --max-tokens 60 --stop "\\n\\n" -o para\nROMEO:\n')  # typed as \n\n
    assert k.value("para.text == full.text[:full.text.index(chr(10) * 2)] and para.finish_reason == 'stop'")


def test_system_and_chat_history_across_cells(k):
    run(k, "%vllama reset")
    run(k, '%%vllama --chat -s "Thou art a herald." -t 0 --max-tokens 8 -o one\nWho comes?\n')
    run(k, "%%vllama --chat -t 0 --max-tokens 8 -o two\nAnd then?\n")
    hist = k.value("__import__('vllama_jupyter').session.get_session().history")
    assert [m["role"] for m in hist] == ["system", "user", "assistant", "user", "assistant"]
    assert hist[0]["content"] == "Thou art a herald." and hist[3]["content"] == "And then?"
    assert hist[4]["content"] == k.value("two.text")
    out = stream_text(run(k, "%vllama history"))
    assert "user: Who comes?" in out and "system: Thou art a herald." in out
    # a system prompt without --chat answers alone and leaves the history
    run(k, '%%vllama -s "Be brief." -t 0 --max-tokens 4 -o solo\nSpeak.\n')
    assert len(k.value("__import__('vllama_jupyter').session.get_session().history")) == 5
    assert k.value("solo.prompt_tokens") > k.value("len(__import__('vllama_jupyter').session.get_session().engine.tokenize('Speak.'))")
    run(k, "%vllama reset")
    assert k.value("__import__('vllama_jupyter').session.get_session().history") == []


@pytest.mark.parametrize("fmt, mime, check", [
    ("markdown", "text/markdown", lambda d: d["text/markdown"] == d["text/plain"]),
    ("code", "text/markdown", lambda d: d["text/markdown"].startswith("```\n")),
    ("text", "text/plain", lambda d: set(d) == {"text/plain"}),
])
def test_formats(k, fmt, mime, check):
    d = shown(run(k, f"%%vllama -f {fmt} -t 0 --max-tokens 10\nROMEO:\n"))
    assert mime in d and check(d)


def test_json_schema_from_variable_and_literal(k):
    k.execute('schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},'
              ' "lines": {"type": "integer"}}, "required": ["name", "lines"]}')
    msgs = run(k, "%%vllama --json-schema schema -t 0 --max-tokens 60 -o j\nKING LEAR:\n")
    data = json.loads(k.value("j.text"))
    assert set(data) == {"name", "lines"}
    assert shown(msgs)["application/json"] == data  # -f json is implied and shown as JSON
    run(k, """%%vllama --json-schema '{"type": "array", "items": {"type": "boolean"}, "maxItems": 3}' -t 0 --max-tokens 30 -o arr\nX\n""")
    assert all(isinstance(x, bool) for x in json.loads(k.value("arr.text")))
    err = one_error_line(k.execute("%%vllama --json-schema nope_not_json\nX\n"))
    assert "neither a variable holding a schema nor JSON text" in err


def test_out_no_stream_and_quiet(k):
    msgs = run(k, "%%vllama --no-stream --quiet -t 0 --max-tokens 300 --ignore-eos -o q\nROMEO:\n")
    assert not of_type(msgs, "update_display_data") and len(of_type(msgs, "display_data")) == 1
    assert shown(msgs)["text/plain"] == k.value("q.text")
    assert "tokens/s" not in stream_text(msgs)
    assert k.value("type(q).__name__") == "Result" and k.value("q.finish_reason") == "length"
    assert k.value("q._repr_markdown_().startswith(q.text)")


def test_interpolation_looks_up_and_never_evaluates(k):
    k.execute("class P: name = 'ROMEO'\n"
              "p = P(); cast = ['JULIET', 'TYBALT']; d = {'who': 'MERCUTIO'}; _secret = 'hidden'\n"
              "import os; os.environ.pop('VLLAMA_PWNED', None)")
    run(k, "%%vllama -t 0 --max-tokens 2 -o r1\n{p.name} {cast[1]} {d[who]} {d['who']} {missing} {_secret} "
           "{__import__('os').environ.setdefault('VLLAMA_PWNED', '1')} {p.__class__}\n")
    prompt_ids = k.value("__import__('vllama_jupyter').session.get_session().engine.tokenize("
                         "\"ROMEO TYBALT MERCUTIO MERCUTIO {missing} {_secret} "
                         "{__import__('os').environ.setdefault('VLLAMA_PWNED', '1')} {p.__class__}\\n\")")
    assert k.value("r1.prompt_tokens") == len(prompt_ids)
    assert k.value("'VLLAMA_PWNED' in __import__('os').environ") is False
    run(k, "%%vllama --no-interpolate -t 0 --max-tokens 2 -o r2\n{p.name}\n")
    assert k.value("r2.prompt_tokens") == len(k.value(
        "__import__('vllama_jupyter').session.get_session().engine.tokenize('{p.name}\\n')"))


def test_model_and_engine_options_switch(k, tmp_path):
    other = tmp_path / "copy.gguf"
    shutil.copy(EMBEDDED_DIR / "model.gguf", other)
    run(k, f"%%vllama -m {other} -e llamacpp -t 0 --max-tokens 3 -o r\nROMEO:\n")
    assert k.value("r.model") == "copy.gguf"
    out = stream_text(run(k, "%vllama status"))
    assert "copy.gguf" in out and "why:" in out and "engine: llamacpp" in out
    run(k, "%%vllama -m embedded -t 0 --max-tokens 3 -o r\nROMEO:\n")
    assert k.value("r.model") == "tiny-shakespeare"


def test_line_subcommands(k):
    assert "GPU:" in stream_text(run(k, "%vllama hardware"))
    listed = stream_text(run(k, "%vllama models"))
    assert re.search(r"tiny-shakespeare  \[embedded; gguf, hf\] · [\d.]+ [KM]iB: fits, up to [\d,]+ tokens of context", listed)
    assert "%vllama SUBCOMMAND" in stream_text(run(k, "%vllama help"))
    assert "unloaded" in stream_text(run(k, "%vllama unload"))
    assert "no model loaded" in stream_text(run(k, "%vllama status"))
    out = stream_text(run(k, "%vllama load embedded --engine llamacpp"))
    assert "engine: llamacpp" in out and "model:  tiny-shakespeare" in out


@pytest.mark.parametrize("cell, words", [
    ("%%vllama -m no-such-model\nhi", "unknown model 'no-such-model'"),
    ("%%vllama -e ollama\nhi", "unknown engine 'ollama'"),
    ("%%vllama --max-tokens 0\nhi", "max_tokens must be a whole number >= 1"),
    ("%%vllama -t 9\nhi", "temperature must be between 0 and 2"),
    ("%%vllama --repetition-penalty 0\nhi", "repetition_penalty must be in (0, 2]"),
    ("%%vllama --logit-bias the\nhi", "--logit-bias takes TOKEN=BIAS"),
    ("%%vllama --logit-bias the=lots\nhi", "the bias after '=' must be a number"),
    ("%%vllama --logit-bias ' the=400'\nhi", "logit_bias of ' the' must be a number from -100 to 100"),
    ("%%vllama --logit-bias 'ROMEO and=5'\nhi", "logit_bias 'ROMEO and' is 3 tokens here"),
    ("%%vllama --min-tokens 2 --grammar 'root ::= \"a\"'\nhi", "min_tokens cannot be combined with a grammar"),
    ("%%vllama\n   \n", "the cell is empty"),
    ("%%vllama\n" + "ROMEO: " * 900, "but the context holds"),
    ("%vllama load /nope/m.gguf", "model file not found"),
    ("%vllama frobnicate", "unknown subcommand 'frobnicate'"),
])
def test_bad_input_one_line_engine_kept(k, cell, words):
    run(k, "%%vllama -t 0 --max-tokens 2\nROMEO:\n")
    before = k.value("id(__import__('vllama_jupyter').session.get_session().engine)")
    assert words in one_error_line(k.execute(cell))
    assert k.value("id(__import__('vllama_jupyter').session.get_session().engine)") == before
    run(k, "%%vllama -t 0 --max-tokens 2 -o ok\nROMEO:\n")
    assert k.value("ok.output_tokens") == 2


def test_bad_option_is_a_usage_error(k):
    assert failed_line(k.execute("%%vllama --max-tokns 5\nhi")) == "UsageError: unrecognized arguments: --max-tokns 5"
    assert "check the quotes" in failed_line(k.execute('%%vllama -s "unclosed\nhi'))
