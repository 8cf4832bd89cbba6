"""Every generation option is declared once (options.OPTIONS); the magic, the CLI, the panel, the
share server and the openai engine accept exactly the declared ones."""
import argparse
import subprocess
import sys

import pytest

from vllama_jupyter import Sampling
from vllama_jupyter.engines.remote import PRESETS
from vllama_jupyter.options import OPTIONS, from_openai, to_openai
from vllama_jupyter.sampling import settings

from .conftest import ROOT

DECLARED = {o.name for o in OPTIONS}
# options that are not sampling settings but belong to the surface that shows them
MAGIC_OWN = {"model", "engine", "system", "chat", "image", "tools", "mcp", "run_tools", "max_rounds", "format", "out", "no_stream", "quiet",
             "no_interpolate"}
CLI_OWN = {"prompt", "model", "engine", "hardware", "system", "image"}


def dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions if a.dest != "help"}


def test_sampling_is_the_declaration():
    assert set(settings(Sampling())) == DECLARED
    for o in OPTIONS:
        assert getattr(Sampling(), o.name) == o.default


def test_magic_and_cli_take_exactly_the_declared_options():
    from vllama_jupyter.cli import build_parser
    from vllama_jupyter.magics import VllamaMagics

    assert dests(VllamaMagics.vllama.parser) - MAGIC_OWN == DECLARED
    assert dests(build_parser()) - CLI_OWN == DECLARED
    doc = VllamaMagics.vllama.__doc__
    for o in OPTIONS:
        assert all(flag in doc for flag in o.flags) and o.help.split(" (")[0][:30] in " ".join(doc.split())


def test_panel_has_a_control_for_each_labelled_option(session):
    pytest.importorskip("ipywidgets")
    from vllama_jupyter.widgets.panel import Panel

    p = Panel()
    try:
        assert set(p.controls) == {o.name for o in OPTIONS if o.panel}
        shown, todo = [], [p.widget]
        while todo:   # every control is somewhere in the panel's tree
            w = todo.pop()
            shown.append(w)
            todo += list(getattr(w, "children", ()))
        assert all(any(c is w for w in shown) for c in p.controls.values())
        for o in OPTIONS:
            if o.panel:
                assert p.controls[o.name].tooltip == o.help
        assert p.sampling() == Sampling()
        p.think.value, p.max_thinking.value = "low", 12
        assert (p.sampling().think, p.sampling().max_thinking) == ("low", 12)
    finally:
        p.close()


def test_openai_body_round_trips_every_wire_option():
    s = Sampling(max_tokens=7, temperature=0.3, top_p=0.5, top_k=3, seed=9, stop=("x",), ignore_eos=True,
                 json_schema={"type": "object"}, logprobs=2, think="low", tool_choice="required",
                 repetition_penalty=1.2, repeat_last_n=32, presence_penalty=0.5, frequency_penalty=-0.5, min_p=0.1,
                 typical_p=0.9, logit_bias={5: -100.0, 7: 2.5}, min_tokens=3, banned=("x", "y"), dry_multiplier=0.8,
                 xtc_probability=0.5, xtc_threshold=0.2, lora="cheese")
    assert {o.name for o in OPTIONS if o.wire and o.kind != "bool"} <= {k for k, v in vars(s).items() if v}
    for chat in (False, True):
        body = to_openai(s, PRESETS["vllama"], chat)
        back = Sampling.make(**from_openai(body, chat))
        assert back == s, (chat, body)
    g = Sampling(grammar='root ::= "a"')
    assert Sampling.make(**from_openai(to_openai(g, PRESETS["vllama"], False), False)) == g
    # names OpenAI clients use for the same thing
    assert from_openai({"max_completion_tokens": 5}, True)["max_tokens"] == 5
    assert from_openai({"chat_template_kwargs": {"enable_thinking": False}}, True)["think"] is False
    assert from_openai({"tool_choice": {"type": "function", "function": {"name": "f"}}}, True)["tool_choice"] == "f"


def test_an_option_a_server_cannot_honour_is_an_error():
    from vllama_jupyter.capabilities import Capabilities
    from vllama_jupyter.gate import check

    generic = Capabilities("openai", PRESETS["openai"].label, False, grammar=PRESETS["openai"].grammar)
    for s, words in ((Sampling(grammar='root ::= "a"'), "takes no grammar"), (Sampling(top_k=5), "top_k=5"),
                     (Sampling(ignore_eos=True), "ignore_eos")):
        with pytest.raises(Exception, match=words):
            check(generic, s, chat=True)
    check(generic, Sampling(top_k=0), chat=True)   # "off" is what such a server does


def test_config_traits_are_checked_by_the_declaration(capsys):
    from IPython.testing.globalipapp import start_ipython

    from vllama_jupyter.magics import VllamaMagics

    ip = start_ipython()
    ip.run_line_magic("load_ext", "vllama_jupyter")
    magics = next(m for m in ip.configurables if isinstance(m, VllamaMagics))
    before = magics.temperature
    ip.run_line_magic("config", "VllamaMagics.temperature = 9")
    assert magics.temperature == before
    ip.run_line_magic("config", "VllamaMagics.top_p = 0.5")
    assert magics.top_p == 0.5


@pytest.mark.parametrize("args, out, err", [
    (["-t", "0", "--max-tokens", "6", "--logit-bias", " the=100", "--repeat-penalty", "1.2", "ROMEO:"],
     "ROMEO: the the the the the the", ""),
    (["--logit-bias", "the", "ROMEO:"], "", "vllama: --logit-bias takes TOKEN=BIAS"),
    (["--min-p", "2", "ROMEO:"], "", "vllama: min_p must be between 0 and 1"),
])
def test_the_cli_takes_the_sampling_controls(args, out, err):
    r = subprocess.run([sys.executable, "-m", "vllama_jupyter", *args], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.stdout.startswith(out) and (r.returncode == 0) == (not err), (r.stdout, r.stderr)
    if err:
        assert r.stderr.strip().splitlines()[-1].startswith(err) and "Traceback" not in r.stderr, r.stderr
