"""What the README says works, one test per claim, through the surface it shows:
`scripts/quickstart.sh`, the `vllama` command, `%vllama bench` (and `--widget`), `%vllama panel` with `$VLLAMA_MODELS` in its picker,
`share --stop`, a `--logprobs N` cell, `-f json`, `%config` defaults, a cell naming the loaded
model by alias or `~/` path, `prompt_cache`, `bench.run(prompts=...)`, and sharing ending with
a clean kernel shutdown."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from vllama_jupyter.bench.kernel import Kernel, of_type, stream_text
from vllama_jupyter.models import EMBEDDED_DIR

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow
WIDGET = "application/vnd.jupyter.widget-view+json"
ALIAS_FILE = "qwen2.5-0.5b-instruct-q4_k_m.gguf"   # what the alias's GGUF pattern picks


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with ~/models/tiny.gguf (also $VLLAMA_MODELS) and an offline Hugging Face cache
    holding the alias qwen2.5-0.5b's GGUF repo (the embedded weights under its file name)."""
    home = tmp_path_factory.mktemp("home")
    (home / "models").mkdir()
    shutil.copy(EMBEDDED_DIR / "model.gguf", home / "models" / "tiny.gguf")
    repo = home / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct-GGUF"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(EMBEDDED_DIR / "model.gguf", repo / "snapshots" / commit / ALIAS_FILE)
    return home


@pytest.fixture(scope="module")
def k(home):
    k = Kernel(extra_env={"HOME": str(home), "VLLAMA_MODELS": str(home / "models"),
                          "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"})
    k.execute("%load_ext vllama_jupyter\nimport vllama_jupyter as v")
    yield k
    k.stop()


def engine_id(k) -> int:
    return k.value("id(v.session.get_session().engine)")


def displayed(msgs) -> list[dict]:
    return [m["content"]["data"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data", "execute_result")]


def test_quickstart_streams_in_the_terminal_then_executes_the_notebook(tmp_path):
    """The README's first command (its set-up finds everything installed by the test command)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=1200, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    terminal = r.stdout.split("== executing")[0]
    assert "ROMEO:" in terminal and "— 120 tokens · TTFT" in r.stderr
    import nbformat
    nb = nbformat.read(tmp_path / "01_quickstart.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    assert "(80, 'length', 'tiny-shakespeare')" in r.stdout   # the notebook's checked cell, shown


def test_the_vllama_command_streams_the_embedded_model():
    cli = Path(sys.executable).with_name("vllama")
    r = subprocess.run([str(cli), "ROMEO:", "--max-tokens", "20", "--seed", "7"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ROMEO:") and len(r.stdout) > len("ROMEO:") + 10
    assert "— 20 tokens · TTFT" in r.stderr and "llamacpp · tiny-shakespeare" in r.stderr


def test_bench_cell_fills_a_table(k, tmp_path):
    msgs = k.execute(f"%vllama bench -e llamacpp -n 4 -c 1,2 --max-tokens 8 --csv {tmp_path}/b")
    assert msgs.status == "ok" and not of_type(msgs, "error")
    assert any("text/html" in d for d in displayed(msgs))
    [summary] = [p for p in stream_text(msgs).removeprefix("wrote ").strip().split(", ") if "summary" in p]
    import pandas as pd
    table = pd.read_csv(summary)
    assert table["concurrency"].tolist() == [1, 2] and table["completed"].tolist() == [4, 4]


def test_bench_widget_and_panel_cells_show_widgets(k, home):
    for cell in ("%vllama bench --widget", "%vllama panel"):
        msgs = k.execute(cell)
        assert msgs.status == "ok" and any(WIDGET in d for d in displayed(msgs)), cell
    # the panel's picker lists $VLLAMA_MODELS
    assert k.execute("p = v.panel()").status == "ok"
    assert any("tiny.gguf" in o for o in k.value("list(p.model.options)"))


def test_share_stop_ends_sharing(k):
    assert k.execute("%vllama load embedded").status == "ok"
    assert k.execute("%vllama share").status == "ok"
    info = k.value("v.share()")
    token = json.loads(Path(info["file"]).read_text())["token"]
    assert httpx.get(info["url"] + "/models", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    stopped = k.execute("%vllama share --stop")
    assert stopped.status == "ok" and "not shared any more" in stream_text(stopped)
    assert not Path(info["file"]).exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(info["url"] + "/models", timeout=5)


def test_a_logprobs_cell_keeps_each_tokens_alternatives(k):
    msgs = k.execute("%%vllama -t 0 --max-tokens 6 --logprobs 3 -o lp\nROMEO:\n")
    assert msgs.status == "ok" and not of_type(msgs, "error")
    assert k.value("(len(lp.logprobs), [len(t.top) for t in lp.logprobs])") == (6, [3] * 6)
    assert k.value("all(t.logprob <= 0 and t.token == t.top[0][0] for t in lp.logprobs)")


def test_format_json_shows_json(k):
    assert k.execute("schema = {'type': 'object', 'properties': {'name': {'type': 'string', 'maxLength': 8}}, 'required': ['name']}").status == "ok"
    msgs = k.execute("%%vllama -f json --json-schema schema -t 0 --max-tokens 40 -o j\nKING LEAR:\n")
    assert msgs.status == "ok"
    shown = [d["application/json"] for d in displayed(msgs) if "application/json" in d]
    assert shown and shown[-1] == json.loads(k.value("j.text"))


def test_config_sets_model_top_p_and_format(k):
    assert k.execute("%config VllamaMagics.model = '~/models/tiny.gguf'\n%config VllamaMagics.top_p = 0.5\n"
                     "%config VllamaMagics.format = 'markdown'").status == "ok"
    try:
        msgs = k.execute("%%vllama --max-tokens 5 -o c\nROMEO:\n")
        assert msgs.status == "ok"
        assert k.value("v.status()['model']") == "tiny.gguf"
        assert k.value("c.record['sampling']['top_p']") == 0.5
        assert any("text/markdown" in d for d in displayed(msgs))
    finally:
        k.execute("%config VllamaMagics.model = ''\n%config VllamaMagics.top_p = 1.0\n%config VllamaMagics.format = 'text'")


def test_naming_the_loaded_model_by_home_path_or_alias_does_not_reload(k):
    assert k.execute("%vllama load ~/models/tiny.gguf").status == "ok"
    loaded = engine_id(k)
    assert k.execute("%%vllama -m ~/models/tiny.gguf --max-tokens 3\nROMEO:\n").status == "ok"
    assert engine_id(k) == loaded
    # an alias, from the Hugging Face cache (offline)
    assert k.execute("%vllama load qwen2.5-0.5b").status == "ok"
    assert k.value("v.status()['model']") == "qwen2.5-0.5b"
    loaded = engine_id(k)
    assert k.execute("%%vllama -m qwen2.5-0.5b --max-tokens 3\nROMEO:\n").status == "ok"
    assert engine_id(k) == loaded
    assert k.value("v.status()['model']") == "qwen2.5-0.5b"


def test_prompt_cache_true_and_false(k):
    """The record says whether a prefix's cache was re-used: by default in a chat's follow-up only."""
    completion = "v.generate('ROMEO:', max_tokens=4).record['prompt_cache']"
    follow = "v.chat('And then?', max_tokens=4, temperature=0).run().record['prompt_cache']"
    for option, want in (("", (False, True)), (", prompt_cache=True", (True, True)), (", prompt_cache=False", (False, False))):
        assert k.execute(f"v.load('embedded'{option})\n%vllama reset\n"
                         "first = v.chat('Who goes there?', max_tokens=4, temperature=0).run()").status == "ok"
        assert (k.value(completion), k.value(follow)) == want, option


def test_bench_run_with_your_own_prompts(k):
    assert k.execute("v.load('embedded')\nfrom vllama_jupyter import bench\n"
              "res = bench.run(engine='llamacpp', prompts=['ROMEO:', 'JULIET:\\nGood night'], num_requests=2,\n"
                     "                max_tokens=4, warmup=0)").status == "ok"
    assert k.value("res.requests['prompt_tokens'].tolist()") == k.value(
        "[v.count_tokens('ROMEO:'), v.count_tokens('JULIET:\\nGood night')]")
    assert k.value("res.summary['completed'].tolist()") == [2]


def test_sharing_stops_when_its_kernel_shuts_down_cleanly(tmp_path):
    a = Kernel(extra_env={"JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        assert a.execute("%load_ext vllama_jupyter\n%vllama load embedded\n%vllama share").status == "ok"
        [share] = tmp_path.glob("vllama-shared-*.json")
        url = json.loads(share.read_text())["url"]
    finally:
        a.kc.stop_channels()
        a.km.shutdown_kernel(now=False)   # a clean shutdown: the kernel's own exit runs
    assert not share.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=5)


def test_the_printed_lines_let_a_shell_use_the_share_on_a_fixed_port(k, tmp_path):
    """`%vllama share --port P` prints an export line; pasted into a shell, the README's `openai`
    one-liner works. A taken port is one line."""
    import re
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert k.execute("%vllama load embedded").status == "ok"
    shared = k.execute(f"%vllama share --port {port}")
    out = stream_text(shared)
    assert shared.status == "ok" and f"at http://127.0.0.1:{port}/v1" in out
    export = next(line for line in out.splitlines() if "export OPENAI_BASE_URL=" in line)
    readme = (ROOT / "README.md").read_text()
    one_liner = re.search(r"^python -c \"import openai; .*\"$", readme, re.M).group(0)
    script = export.split("other tools:", 1)[1].strip() + "\n" + one_liner.replace("python ", f"{sys.executable} ", 1)
    env = {k_: v_ for k_, v_ in __import__("os").environ.items() if not k_.startswith("OPENAI_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    taken = k.execute(f"import vllama_jupyter as v; v.stop_sharing(); import socket; busy = socket.socket(); "
                      f"busy.bind(('127.0.0.1', {port})); busy.listen(); v.share(port={port})")
    from .helpers import failed_line
    assert f"cannot listen on 127.0.0.1:{port}" in failed_line(taken)
    k.execute("busy.close()")
