"""The README's notebook and Python examples, run verbatim in a real kernel, in order."""
import re
from pathlib import Path

from vllama_jupyter.bench.kernel import Kernel, of_type

from .conftest import ROOT

README = Path(ROOT) / "README.md"


THINKING = "## Thinking and tools"
VISION = "## Images and plots"
MCP = "## MCP servers as tools"
NEEDS_MODEL = (THINKING, MCP, VISION)   # sections whose examples need a kind of model loaded


def blocks(lang: str | None = None, section: str | None = None) -> list[tuple[str, str]]:
    """The README's fenced blocks; those of `section` only, or (None) those outside the sections
    whose examples need a thinking or vision model loaded."""
    text = README.read_text()
    spans = {name: (text.index(name), text.index("\n## ", text.index(name) + 1)) for name in NEEDS_MODEL}
    if section:
        text = text[slice(*spans[section])]
    else:
        for start, end in sorted(spans.values(), reverse=True):
            text = text[:start] + text[end:]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)
            if lang is None or m.group(1) == lang]


def test_readme_vision_examples_run_verbatim(tmp_path):
    """The images section's examples, verbatim, with a small vision model built here loaded."""
    from benchmarks.models import vision_model

    cells = [code for lang, code in blocks(section=VISION) if lang in ("ipython", "python")]
    assert len(cells) == 2 and cells[1].startswith("%%vllama --image fig")
    k = Kernel(cwd=str(tmp_path))
    try:
        k.execute(f"%load_ext vllama_jupyter\nimport vllama_jupyter as v\nv.load({str(vision_model())!r})\n"
                  "import matplotlib\nmatplotlib.use('Agg')")
        for code in cells:
            msgs = k.execute(code, timeout=600)
            assert msgs.status == "ok", (code, [m["content"]["evalue"] for m in of_type(msgs, "error")])
        out = "".join(m["content"]["text"] for m in of_type(msgs, "stream"))
        assert "1 image (16 tokens, sha256 " in out, out
        assert k.value("[(i['width'], i['height'], i['mode'], len(i['sha256'])) for i in r.record['images']]") \
            == [(300, 200, "RGB", 64)]
    finally:
        k.stop()


def test_readme_thinking_examples_run_verbatim(tmp_path):
    """The thinking section's examples, verbatim, with the kind of model each says it needs loaded
    (small random-weight models with the real tokenizer and templates, built here)."""
    from benchmarks.models import chat_model

    cells = [code for lang, code in blocks(section=THINKING) if lang in ("ipython", "python")]
    assert len(cells) == 3 and "--think low" in cells[2]
    k = Kernel(cwd=str(tmp_path))
    try:
        k.execute(f"%load_ext vllama_jupyter\nimport vllama_jupyter as v\n"
                  f"v.load({str(chat_model('Qwen-Qwen3-0.6B'))!r}, 'llamacpp')")
        for code in cells[:2]:
            msgs = k.execute(code, timeout=600)
            assert msgs.status == "ok", (code, [m["content"]["evalue"] for m in of_type(msgs, "error")])
        out = "".join(m["content"]["text"] for m in of_type(msgs, "stream"))
        assert "→ lookup(name=" in out and ("← Mantua" in out or "← Verona" in out), out
        assert out.count("tokens/s") == 2   # the round with the call, then the answer
        k.execute(f"v.load({str(chat_model('openai-gpt-oss-120b'))!r}, 'llamacpp')")
        msgs = k.execute(cells[2], timeout=600)
        assert msgs.status == "ok" and k.value("r.record['sampling']['think']") == "low"
    finally:
        k.stop()


def test_readme_mcp_examples_run_verbatim(tmp_path):
    """The MCP section's examples, verbatim, with a Qwen3-template model loaded: mcp-server-time
    (from PyPI) offered to the model, then the section's own server answers a forced call."""
    from benchmarks.models import chat_model

    cells = [code for lang, code in blocks(section=MCP) if lang in ("ipython", "python")]
    assert len(cells) == 4 and cells[3].startswith("%%vllama --mcp notes --run-tools")
    k = Kernel(cwd=str(tmp_path))
    try:
        k.execute(f"%load_ext vllama_jupyter\nimport vllama_jupyter as v\n"
                  f"v.load({str(chat_model('Qwen-Qwen3-0.6B'))!r}, 'llamacpp')")
        for code in cells:
            msgs = k.execute(code, timeout=600)
            assert msgs.status == "ok", (code, [m["content"]["evalue"] for m in of_type(msgs, "error")])
        out = "".join(m["content"]["text"] for m in of_type(msgs, "stream"))
        assert '→ where(name="' in out and ("\n← Mantua" in out or "\n← Verona" in out), out
        assert k.value("repr(clock)") == "MCP server mcp-time: python -m mcp_server_time · 2 tools · running"
    finally:
        k.stop()


def test_readme_examples_run_verbatim(tmp_path):
    cells = [code for lang, code in blocks() if lang in ("ipython", "python")]
    assert len(cells) >= 4 and any(c.startswith("%%vllama") for c in cells)
    k = Kernel(cwd=str(tmp_path))
    try:
        for code in cells:
            msgs = k.execute(code, timeout=600)
            errors = [m["content"]["evalue"] for m in of_type(msgs, "error")]
            assert msgs.status == "ok", (code, errors)
        # the output shown under the %%vllama example is what the embedded model really writes
        shown = next(code for lang, code in blocks("") if code.startswith("This is the day"))
        text = shown.rsplit("...", 1)[0].rstrip(" ,")
        assert k.value("reply.text").lstrip("\n").startswith(text.rsplit(",", 1)[0])
        assert shown.strip().splitlines()[-1].startswith("— 80 tokens · TTFT")
        assert k.value("reply.output_tokens") == 80
        # the one-flag fix for a loop: the penalty reached the sampler and changed the greedy text
        assert k.value("varied.record['sampling']['repetition_penalty']") == 1.1
        assert k.value("varied.text != v.generate('ROMEO:\\n', temperature=0, max_tokens=60).text")
        # the agents' APIs answered through their own clients (sampled: the answer may end before 20 tokens)
        status, n, stop, m = k.value("(r.status, r.usage.output_tokens, m.stop_reason, m.usage.output_tokens)")
        assert (status == "incomplete") == (n == 20) and (stop == "max_tokens") == (m == 20) and n and m
        assert (tmp_path / "out" / "run1_summary.csv").exists()
    finally:
        k.stop()


def test_notebooks_are_committed_clean_and_as_generated(tmp_path):
    """No outputs, counts or widget state in the repository's notebooks, except the expected
    output of each nbval-checked cell (what nbval compares); they are what scripts/make_notebooks.py writes."""
    import subprocess
    import sys

    import nbformat

    for path in sorted((Path(ROOT) / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert "widgets" not in nb.metadata, path
        for cell in nb.cells:
            if cell.cell_type == "code":
                if "nbval-check-output" in cell.metadata.get("tags", []):
                    assert [o.output_type for o in cell.outputs] == ["execute_result"], (path, cell.source[:40])
                else:
                    assert cell.outputs == [] and cell.execution_count is None, (path, cell.source[:40])
    committed = {p.name: p.read_bytes() for p in (Path(ROOT) / "notebooks").glob("*.ipynb")}
    subprocess.run([sys.executable, str(Path(ROOT) / "scripts" / "make_notebooks.py"), str(tmp_path)], check=True)
    generated = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    assert sorted(generated) == sorted(committed)
    for name in committed:
        assert generated[name] == committed[name], f"{name} differs from what scripts/make_notebooks.py writes: run it"
