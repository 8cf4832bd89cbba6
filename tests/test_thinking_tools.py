"""Thinking and tools end to end on llama.cpp and a real llama.cpp server, with small random-weight
models around Qwen's real tokenizer and real chat templates (Qwen3, Qwen3.5, gpt-oss). Structure
is forced through the real engine with a grammar; what is checked is what the user sees: the parts
of the Result, the cell's display and stats line, the history, the record, the tool calls."""
import json
import os

import pytest

import vllama_jupyter as v
from benchmarks.models import chat_model
from vllama_jupyter.servers import make
from vllama_jupyter.session import get_session

from .helpers import failed_line
from vllama_jupyter.bench.kernel import of_type, stream_text

# <think> a few words </think> then a capitalised answer
THINK = r'root ::= "<think>\n" [a-z]{2,6} (" " [a-z]{2,6}){2,5} "\n</think>\n\n" [A-Z] [a-z]{2,8} (" " [a-z]{2,8}){1,4} "."'
HARMONY = (r'root ::= "<|channel|>analysis<|message|>" [a-z]{2,6} (" " [a-z]{2,6}){2,4} "<|end|><|start|>assistant'
           r'<|channel|>final<|message|>" [A-Z] [a-z]{2,8} (" " [a-z]{2,8}){1,3} "."')


@pytest.fixture(scope="module")
def qwen3():
    return str(chat_model("Qwen-Qwen3-0.6B"))


def load(path):
    s = get_session()
    if s.engine is None or s.ref is None or str(s.ref.path) != path:
        v.load(path, "llamacpp")
    return s.engine


def check_parts(r):
    assert r.reasoning.strip() and r.text.strip(), (r.reasoning, r.text)
    assert "<think>" not in r.text + r.reasoning and "</think>" not in r.text + r.reasoning
    assert "<|" not in r.text + r.reasoning
    assert r.text[0].isupper() and r.text.endswith(".")
    assert 0 < r.reasoning_tokens < r.output_tokens
    assert f"({r.reasoning_tokens} thinking, {r.output_tokens - r.reasoning_tokens} answer)" in r.stats_line()
    assert r.record["reasoning_tokens"] == r.reasoning_tokens and r.record["reasoning"] == r.reasoning


def test_forced_reasoning_comes_apart_from_the_answer(qwen3):
    eng = load(qwen3)
    r = v.chat("Who goes there?", keep=False, temperature=0, max_tokens=120, grammar=THINK).run()
    check_parts(r)
    # the same through the protocol directly, and the history keeps the answer only
    v.get_session().history.clear()
    r2 = v.chat("Who goes there?", temperature=0, max_tokens=120, grammar=THINK).run()
    assert (r2.text, r2.reasoning) == (r.text, r.reasoning)
    last = get_session().history[-1]
    assert last["content"] == r.text and last["reasoning_content"] == r.reasoning
    # Qwen3's template leaves an earlier turn's thinking out of the next prompt
    nxt = eng.chat_prompt(get_session().history + [{"role": "user", "content": "And then?"}])
    assert r.text in nxt and r.reasoning.strip() not in nxt
    get_session().history.clear()


def test_think_switch_renders_the_templates_off_switch(qwen3):
    eng = load(qwen3)
    msgs = [{"role": "user", "content": "hi"}]
    assert eng.chat_prompt(msgs, think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert eng.chat_prompt(msgs, think=True).endswith("<|im_start|>assistant\n")
    with pytest.raises(v.VllamaError, match="has no reasoning levels, so think='high' cannot be honoured"):
        v.chat("hi", keep=False, think="high")
    r = v.chat("Who goes there?", keep=False, temperature=0, max_tokens=8, think=False).run()
    assert r.reasoning == "" and r.record["sampling"]["think"] is False


def test_max_thinking_closes_the_thought_after_n_tokens():
    # Qwen3.5's template opens the thought itself (the prompt ends with <think>)
    load(str(chat_model("Qwen3.5-4B")))
    r = v.chat("Who goes there?", keep=False, temperature=0, max_tokens=40, ignore_eos=True, max_thinking=8).run()
    assert r.reasoning_tokens == 8 and r.reasoning.strip(), (r.reasoning_tokens, r.reasoning)
    assert r.text.strip() and r.output_tokens == 40
    free = v.chat("Who goes there?", keep=False, temperature=0, max_tokens=40, ignore_eos=True).run()
    assert free.reasoning_tokens > 8 and free.text == ""   # without the limit it never stops thinking


def test_gpt_oss_channels_and_reasoning_effort():
    eng = load(str(chat_model("openai-gpt-oss-120b")))
    msgs = [{"role": "user", "content": "hi"}]
    assert "Reasoning: low" in eng.chat_prompt(msgs, think="low")
    with pytest.raises(v.VllamaError, match="this model always reasons"):
        v.chat("hi", keep=False, think=False)
    r = v.chat("Who goes there?", keep=False, temperature=0, max_tokens=120, grammar=HARMONY, think="low").run()
    check_parts(r)
    # its markers are control tokens in the vocabulary; llama.cpp renders them (it marks gpt-oss's
    # as user-defined), so the stream's parser sees them
    from vllama_jupyter.engines.llamacpp import Detokenizer

    (channel,) = eng.llm.tokenize(b"<|channel|>", add_bos=False, special=True)
    assert Detokenizer(eng.llm).feed(channel) == "<|channel|>"


@pytest.fixture(scope="module")
def chat_server(qwen3):
    server = make("llamacpp", qwen3).start()
    yield server
    server.stop()


def test_forced_reasoning_through_a_real_llamacpp_server(chat_server, qwen3):
    local = load(qwen3).chat([{"role": "user", "content": "Who goes there?"}],
                             v.Sampling(temperature=0, max_tokens=120, grammar=THINK)).run()
    from vllama_jupyter.engines.openai import Engine

    remote = Engine.connect(url=chat_server.url, preset="llamacpp-server")
    try:
        r = remote.chat([{"role": "user", "content": "Who goes there?"}],
                        v.Sampling(temperature=0, max_tokens=120, grammar=THINK)).run()
    finally:
        remote.close()
    check_parts_remote(r)
    assert (r.text, r.reasoning) == (local.text, local.reasoning)


def check_parts_remote(r):
    assert r.reasoning.strip() and r.text.strip() and "<think>" not in r.text + r.reasoning
    assert r.text[0].isupper() and r.text.endswith(".")


# -- in a real kernel ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k(kernel, qwen3):
    kernel.execute(f"import vllama_jupyter as v\nv.load({qwen3!r}, 'llamacpp')\n"
                   f"G = {THINK!r}\n"
                   "from typing import Literal\ncalls = []\n"
                   "def lookup(name: Literal['ROMEO', 'JULIET']) -> str:\n"
                   "    'Where a character of the play is.'\n"
                   "    calls.append(name)\n    return f'{name} is in Verona'\n"
                   "def boom(name: Literal['ROMEO']) -> str:\n    raise ValueError('no such scene')\n")
    return kernel


def test_thinking_block_in_the_cell(k):
    msgs = k.execute("%%vllama -t 0 --max-tokens 120 --grammar G -s 'You are brief.' -o r\nWho goes there?")
    assert msgs.status == "ok", msgs
    shows = [m["content"]["data"] for m in of_type(msgs, "display_data") + of_type(msgs, "update_display_data")]
    html = [d["text/html"] for d in shows if "text/html" in d]
    final = html[-1]
    assert "<details class='vllama-thinking'>" in final and "<summary>Thinking</summary>" in final   # folded
    assert k.value("r.text") in final and k.value("r.reasoning").strip() in final
    assert f"({k.value('r.reasoning_tokens')} thinking" in stream_text(msgs, "stdout")


def tool_cell(k, extra: str, tools: str = "lookup") -> tuple:
    k.execute("calls.clear()")
    msgs = k.execute(f"%%vllama -t 0 --max-tokens 60 --tools {tools} {extra} -o r\nWhere is Romeo?")
    return msgs, stream_text(msgs, "stdout"), k.value("list(calls)")


def test_tool_calls_run_only_when_allowed(k):
    msgs, out, calls = tool_cell(k, "--tool-choice required")
    assert msgs.status == "ok" and calls == []
    assert "→ lookup(name=" in out and "(not run: pass run_tools=True, or --run-tools" in out
    assert k.value("r.tool_calls[0]['function']['name']") == "lookup"

    msgs, out, calls = tool_cell(k, "--tool-choice required --run-tools")
    assert msgs.status == "ok" and len(calls) == 1, out
    assert f"→ lookup(name=\"{calls[0]}\")" in out and f"← {calls[0]} is in Verona" in out
    assert out.count("tokens/s") == 2   # the call's round, then the answer's
    assert k.value("len(r.rounds)") == 1 and k.value("r.tool_calls") == []


def test_tool_errors_are_shown_and_sent_back(k):
    k.execute("NOSUCH = 'root ::= \"<tool_call>\\\\n{\\\\\"name\\\\\": \\\\\"nosuch\\\\\", \\\\\"arguments\\\\\": {}}\\\\n</tool_call>\"'\n"
              "BADARGS = 'root ::= \"<tool_call>\\\\n{\\\\\"name\\\\\": \\\\\"lookup\\\\\", \\\\\"arguments\\\\\": {\\\\\"name\\\\\": 5}}\\\\n</tool_call>\"'\n"
              "BROKEN = 'root ::= \"<tool_call>\\\\nnot json\\\\n</tool_call>\"'")
    _, out, calls = tool_cell(k, "--tool-choice required --run-tools", tools="boom")
    assert "← error: boom raised ValueError: no such scene" in out and calls == []
    msgs, out, calls = tool_cell(k, "--grammar NOSUCH --run-tools --max-rounds 2")
    assert msgs.status == "ok" and "← error: there is no tool named 'nosuch'; the tools are lookup" in out and calls == []
    # the grammar holds for every round: the model keeps calling, and the loop stops where it was told
    assert out.count("→ nosuch()") == 2 and "stopped after 2 rounds of tool calls" in stream_text(msgs, "stderr")
    msgs, out, calls = tool_cell(k, "--grammar BADARGS --run-tools --max-rounds 1")
    assert "← error: bad arguments for lookup: name:" in out and calls == []
    msgs, out, _ = tool_cell(k, "--grammar BROKEN --run-tools --max-rounds 1")
    assert msgs.status == "ok"
    err = stream_text(msgs, "stderr")
    assert "the model wrote a malformed tool call (not JSON" in err and err.count("\n") <= 1 and "Traceback" not in err
    assert "not json" in k.value("r.text") and k.value("r.tool_calls") == []


def test_bad_think_value_in_the_kernel(k):
    line = failed_line(k.execute("%%vllama --think high\nhi"))
    assert "think='high' cannot be honoured" in line


def test_shared_engine_speaks_reasoning_and_tool_calls_to_openai_clients(qwen3, tmp_path, monkeypatch):
    """A shared engine sends thinking as `reasoning_content` and calls as `tool_calls`: the
    `openai` client reads them, and so does our openai engine (servers' fields, one Result shape)."""
    import json

    from openai import OpenAI

    from vllama_jupyter.engines.openai import Engine

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    load(qwen3)
    info = v.share()
    try:
        token = json.loads(open(info["file"]).read())["token"]
        client = OpenAI(base_url=info["url"], api_key=token)
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"name": {"enum": ["ROMEO", "JULIET"]}}, "required": ["name"]}}}]
        r = client.chat.completions.create(model=info["model"], messages=[{"role": "user", "content": "Where is Romeo?"}],
                                           tools=tools, tool_choice="required", temperature=0, max_tokens=60)
        call = r.choices[0].message.tool_calls[0]
        assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
        assert json.loads(call.function.arguments)["name"] in ("ROMEO", "JULIET")
        chunks = list(client.chat.completions.create(
            model=info["model"], messages=[{"role": "user", "content": "Who goes there?"}], stream=True,
            temperature=0, max_tokens=120, extra_body={"grammar": THINK}))
        assert chunks[0].choices[0].delta.role == "assistant"
        thought = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert thought.strip() and answer[0].isupper() and "<think>" not in thought + answer
        with pytest.raises(Exception, match="max_tokens must be a whole number >= 1"):
            client.chat.completions.create(model=info["model"], messages=[{"role": "user", "content": "hi"}], max_tokens=0)
        short = client.chat.completions.create(model=info["model"], messages=[{"role": "user", "content": "hi"}],
                                               max_completion_tokens=3, temperature=0)
        assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
        two = client.chat.completions.create(model=info["model"], messages=[{"role": "user", "content": "Where is Romeo?"}],
                                             tools=tools, tool_choice="required", n=2, max_tokens=60)
        assert [c.finish_reason for c in two.choices] == ["tool_calls", "tool_calls"]
        lp = client.chat.completions.create(model=info["model"], messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
        assert len(lp.choices[0].logprobs.content) == lp.usage.completion_tokens
        assert all(len(t.top_logprobs) == 2 for t in lp.choices[0].logprobs.content)
        os.environ["VLLAMA_TEST_SHARE_TOKEN"] = token
        eng = Engine.connect(url=info["url"], preset="vllama", api_key_env="VLLAMA_TEST_SHARE_TOKEN")
        try:
            mine = eng.chat([{"role": "user", "content": "Who goes there?"}],
                            v.Sampling(temperature=0, max_tokens=120, grammar=THINK)).run()
            assert (mine.reasoning.strip(), mine.text) == (thought.strip(), answer)
            called = eng.chat([{"role": "user", "content": "Where is Romeo?"}],
                              v.Sampling(temperature=0, max_tokens=60, tool_choice="required"), tools).run()
            assert called.tool_calls[0]["function"]["name"] == "lookup"
        finally:
            eng.close()
    finally:
        v.stop_sharing()


LOOKUP = [{"type": "function", "function": {"name": "lookup", "description": "Where a character is.", "parameters": {
    "type": "object", "properties": {"name": {"type": "string", "enum": ["ROMEO", "JULIET"]}}, "required": ["name"]}}}]


@pytest.mark.parametrize("template", ["Qwen-Qwen3-0.6B", "mistralai-Mistral-Nemo-Instruct-2407",
                                      "Mistral-Small-3.2-24B-Instruct-2506", "meta-llama-Llama-3.1-8B-Instruct",
                                      "openai-gpt-oss-120b", "deepseek-ai-DeepSeek-V3.1"])
def test_a_forced_call_in_each_models_own_format_and_its_result_back(template):
    """Forced in the template's own call format; the call and its result then render through the
    same real template for the next round."""
    from typing import Literal

    def lookup(name: Literal["ROMEO", "JULIET"]) -> str:
        """Where a character is."""
        return f"{name} is in Verona"

    load(str(chat_model(template)))
    shown = []
    r = v.get_session().chat_loop("Where is Romeo?", temperature=0, max_tokens=160, keep=False, tools=[lookup],
                                  run_tools=True, tool_choice="lookup", show=shown.append)
    (call,) = r.rounds[0].tool_calls
    assert call["function"]["name"] == "lookup" and r.rounds[0].text == ""
    assert shown == [f"→ lookup(name=\"{json.loads(call['function']['arguments'])['name']}\")",
                     f"← {json.loads(call['function']['arguments'])['name']} is in Verona"]
    assert len(r.rounds) == 1 and r.finish_reason in ("stop", "length")


@pytest.mark.parametrize("template,native", [
    ("Mistral-Small-3.2-24B-Instruct-2506", '[TOOL_CALLS]lookup[CALL_ID]a1b2c3d4e[ARGS]{"name": "JULIET"}'),
    ("unsloth-mistral-Devstral-Small-2507", '[TOOL_CALLS]lookup[ARGS]{"name": "JULIET"}'),
    ("openai-gpt-oss-120b", '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"name": "JULIET"}'),
    ("Qwen3.5-4B", '\n</think>\n\n<tool_call>\n<function=lookup>\n<parameter=name>\nJULIET\n</parameter>\n</function>\n</tool_call>'),
    ("meta-llama-Llama-3.2-3B-Instruct", '{"name": "lookup", "parameters": {"name": "JULIET"}}'),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>lookup\n"
     '```json\n{"name": "JULIET"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'),
])
def test_calls_in_native_forms_are_read(template, native):
    load(str(chat_model(template)))
    gbnf = "root ::= " + json.dumps(native, ensure_ascii=False)
    r = v.chat("Where is Juliet?", v.Sampling(temperature=0, max_tokens=160, grammar=gbnf), keep=False,
               tools=[lookup_schema_only]).run()
    assert [c["function"]["name"] for c in r.tool_calls] == ["lookup"], (r.text, r.reasoning)
    assert json.loads(r.tool_calls[0]["function"]["arguments"]) == {"name": "JULIET"} and r.text == ""


def lookup_schema_only(name: str) -> str:
    """Where a character is."""
    return name
