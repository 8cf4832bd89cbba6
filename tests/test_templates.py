"""Every chat template llama.cpp vendors (70 real ones, from llama-cpp-python's source
distribution) renders four conversations exactly as transformers' own renderer does (given the
messages as vLLM's server hands them over: tool-call arguments as dicts), or refuses in one line
where transformers refuses too. pytest -s prints the table."""
import json

import pytest

from benchmarks.models import templates
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.messages import check_messages
from vllama_jupyter.templates import for_template, render_template

TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look up a character of the play.",
                                         "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                                                        "required": ["name"]}}}
CALL = {"id": "c4ll0ne12", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"name": "ROMEO"})}}
SYSTEM = {"role": "system", "content": "You are a scholar of the play."}
CONVERSATIONS = {
    "system+user": ([SYSTEM, {"role": "user", "content": "Who is Romeo?"}], None),
    "multi-turn": ([SYSTEM, {"role": "user", "content": "Who is Romeo?"},
                    {"role": "assistant", "content": "A Montague."}, {"role": "user", "content": "And Juliet?"}], None),
    "tools offered": ([SYSTEM, {"role": "user", "content": "Where is Romeo?"}], [TOOL]),
    "tool result": ([SYSTEM, {"role": "user", "content": "Where is Romeo?"},
                     {"role": "assistant", "content": "", "tool_calls": [CALL]},
                     {"role": "tool", "tool_call_id": "c4ll0ne12", "content": "ROMEO is in Mantua"}], [TOOL]),
}


def reference(template: str, msgs: list, tools):
    """transformers' renderer: the prompt text, or the reason it refused."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        out = render_jinja_template(conversations=[for_template(msgs)], tools=tools, chat_template=template,
                                    add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    out = out[0] if isinstance(out, tuple) else out
    return (out[0] if isinstance(out, list) else out), None


def ours(template: str, msgs: list, tools):
    try:
        return render_template(template, check_messages(msgs), bos="<s>", eos="</s>", tools=tools), None
    except VllamaError as e:
        return None, str(e)


def test_every_vendored_template_renders_as_transformers_does():
    pytest.importorskip("transformers", reason="transformers (installed with vLLM) is the reference renderer")
    found = templates()
    assert len(found) >= 70, sorted(found)
    table, mismatches = [], []
    for name, template in found.items():
        row = []
        for conv, (msgs, tools) in CONVERSATIONS.items():
            got, why = ours(template, msgs, tools)
            want, ref_why = reference(template, msgs, tools)
            if want is None:
                # transformers refuses too: we say so in one line, naming the template's reason
                assert got is None and "\n" not in why and why.startswith("the model's chat template"), (name, conv, why, ref_why)
                row.append(f"refused ({why.split(': ', 1)[1][:60]})")
            elif got != want:
                mismatches.append((name, conv, why, got and got[:200], want[:200]))
                row.append("DIFFERENT")
            else:
                row.append("rendered")
        table.append((name, row))
    print("\n" + "\n".join(f"{name:50} " + " | ".join(row) for name, row in table))
    rendered = sum(r == "rendered" for _, row in table for r in row)
    print(f"{rendered} of {len(table) * len(CONVERSATIONS)} renders identical; the rest refused by both")
    assert not mismatches, mismatches[:3]
    assert rendered >= 0.75 * len(table) * len(CONVERSATIONS)
