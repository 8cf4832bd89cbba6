"""Write the notebooks in notebooks/ from the cell lists below (kept as code so diffs stay readable)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook



def ignore(source: str):
    """A cell whose output varies (timings): run, not compared."""
    return new_code_cell(source, metadata={"tags": ["nbval-ignore-output"]})


def check(source: str):
    """A cell whose output is deterministic: nbval compares it."""
    return new_code_cell(source, metadata={"tags": ["nbval-check-output"]})


QUICKSTART = [
    new_markdown_cell("# vllama-jupyter quickstart\n\nLoad the extension, then prompt the kernel's local LLM "
                      "with a `%%vllama` cell: the cell body is the prompt, tokens stream in as they are "
                      "generated, and a stats line (tokens, TTFT, tokens/s) ends the output.\n\n"
                      "With no model named, the embedded tiny-shakespeare model is used, so this runs offline."),
    new_code_cell("%load_ext vllama_jupyter"),
    new_markdown_cell("## What this machine has, and which engine it gets"),
    ignore("%vllama hardware"),
    new_markdown_cell("## Prompt a cell\n\n`-t 0` is greedy decoding; `-o first` keeps the result object."),
    ignore("%%vllama -t 0 --max-tokens 80 -o first\nROMEO:\n"),
    check("first.output_tokens, first.finish_reason, first.engine, first.model"),
    ignore("%vllama status"),
    new_markdown_cell("## Sampling, stop sequences and formats\n\n`--seed` makes sampling repeatable; "
                      "`--stop` ends the text before a sequence; `-f markdown` renders Markdown."),
    ignore("%%vllama -t 0.9 --seed 42 --max-tokens 60 --stop \"\\n\\n\" -f markdown -o sampled\nJULIET:\n"),
    check("sampled.finish_reason in ('stop', 'length'), '\\n\\n' not in sampled.text"),
    new_markdown_cell("## Variables in prompts\n\n`{name}` takes a variable from the notebook by name, "
                      "attribute or index; nothing is evaluated."),
    new_code_cell("speaker = {'name': 'KING HENRY'}"),
    ignore("%%vllama -t 0 --max-tokens 40\n{speaker[name]}:\n"),
    new_markdown_cell("## A conversation\n\n`--chat` continues the kernel's conversation; `%vllama history` "
                      "shows it and `%vllama reset` clears it."),
    ignore("%%vllama --chat -s \"Thou art a herald of the king.\" -t 0 --max-tokens 30\nWhat news from the court?\n"),
    ignore("%%vllama --chat -t 0 --max-tokens 30\nAnd of the queen?\n"),
    ignore("%vllama history"),
    check("import vllama_jupyter as v\n[m['role'] for m in v.session.get_session().history]"),
    new_code_cell("%vllama reset"),
    new_markdown_cell("## Structured output\n\n`--json-schema` constrains the output to a JSON schema "
                      "(llama.cpp grammars, vLLM guided decoding)."),
    new_code_cell("character = {\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 12},"
                  " \"act\": {\"type\": \"integer\"}}, \"required\": [\"name\", \"act\"]}"),
    ignore("%%vllama --json-schema character -t 0 --max-tokens 60 -o card\nKING LEAR:\n"),
    check("import json\nsorted(json.loads(card.text))"),
    new_markdown_cell("## The same engine from Python"),
    ignore("for delta in v.stream('ROMEO:\\n', max_tokens=30, temperature=0):\n"
                  "    print(delta.text, end='')"),
    check("r = v.generate('ROMEO:\\n', max_tokens=30, temperature=0)\n"
                  "r.output_tokens, r.ttft <= r.e2el"),
    check("[x.output_tokens for x in v.batch(['ROMEO:', 'JULIET:', 'HAMLET:'], max_tokens=8)]"),
]


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.write(nb, Path(__file__).resolve().parent.parent / "notebooks" / name)


if __name__ == "__main__":
    write("01_quickstart.ipynb", QUICKSTART)
