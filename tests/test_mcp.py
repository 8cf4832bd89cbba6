"""MCP servers' tools in a real kernel: a real server from PyPI (mcp-server-time) and one written
with the SDK's MCPServer (tests/mcp_server.py), over stdio and streamable HTTP; calls forced
through the real llama.cpp engine (a grammar, or tool_choice) on a Qwen3-template model; a server
that dies mid-call, hangs, fails or never starts; images from a tool to a vision model; and no
server process left behind by a killed kernel."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import vllama_jupyter as v
from benchmarks.models import chat_model, vision_model
from vllama_jupyter import mcp_tools
from vllama_jupyter.bench.kernel import Kernel, stream_text
from vllama_jupyter.session import get_session

from .helpers import failed_line, succeeded, wait_gone

NOTES = str(Path(__file__).with_name("mcp_server.py"))


def forced(name: str, args: dict) -> str:
    """A grammar that makes the model write exactly this Hermes call."""
    call = json.dumps({"name": name, "arguments": args})
    return 'root ::= "<tool_call>\\n' + call.replace("\\", "\\\\").replace('"', '\\"') + '\\n</tool_call>"'


@pytest.fixture(scope="module")
def qwen3():
    return str(chat_model("Qwen-Qwen3-0.6B"))


@pytest.fixture(scope="module")
def k(kernel, qwen3):
    succeeded(kernel.execute(
        f"import os, sys, vllama_jupyter as v\nv.load({qwen3!r}, 'llamacpp')\n"
        f"PARIS = {forced('get_current_time', {'timezone': 'Europe/Paris'})!r}\n"
        f"WAIT = {forced('wait', {'seconds': 30})!r}\n"
        f"BADARGS = {forced('where', {'name': 5})!r}\n"
        f"ROMEO = {forced('where', {'name': 'ROMEO'})!r}\n"
        "def lookup(name: str) -> str:\n    'Where a character is, from the notebook.'\n    return 'in the notebook'\n"))
    yield kernel
    kernel.execute("%vllama mcp stop time\n%vllama mcp stop notes")


def cell(k, flags: str, prompt: str = "What time is it in Paris?"):
    msgs = k.execute(f"%%vllama -t 0 --max-tokens 120 {flags} -o r\n{prompt}")
    return msgs, stream_text(msgs, "stdout")


def test_a_real_mcp_server_from_pypi_answers_a_forced_call(k):
    msgs = succeeded(k.execute("%vllama mcp add --name time python -m mcp_server_time --local-timezone UTC"))
    out = stream_text(msgs)
    assert "MCP server time: python -m mcp_server_time --local-timezone UTC · 2 tools · running" in out
    assert "tools: get_current_time, convert_time · use them with %%vllama --mcp time" in out

    msgs, out = cell(k, "--mcp time --grammar PARIS --max-rounds 1")   # no --run-tools: shown, not run
    succeeded(msgs)
    assert '→ get_current_time(timezone="Europe/Paris")  (not run: pass run_tools=True, or --run-tools' in out

    msgs, out = cell(k, "--mcp time --grammar PARIS --run-tools --max-rounds 1")
    succeeded(msgs)
    assert '→ get_current_time(timezone="Europe/Paris")' in out
    answer = json.loads(out.split("← ", 1)[1].split("\n—")[0])
    assert answer["timezone"] == "Europe/Paris" and answer["datetime"][:4].isdigit()
    # the same server again is the same session: no second process
    assert "MCP server time" in stream_text(succeeded(k.execute("%vllama mcp list")))
    status = stream_text(succeeded(k.execute("%vllama status")))
    assert re.search(r"^mcp:    .*\btime \(2 tools\)", status, re.M), status
    assert k.value("v.mcp('python -m mcp_server_time --local-timezone UTC', name='time') is v.mcp("
                   "'python -m mcp_server_time --local-timezone UTC')") is True


def test_sdk_server_tools_beside_a_notebook_function_and_the_process_tree(k):
    succeeded(k.execute(f"notes = v.mcp([sys.executable, {NOTES!r}])"))
    assert k.value("notes.name") == "notes"
    succeeded(k.execute("r = v.chat('Which process are you?', tools=[lookup, notes], tool_choice='pid', "
                        "run_tools=True, max_rounds=1, max_tokens=120, temperature=0)"))
    assert k.value("[c['function']['name'] for c in r.tool_calls]") == ["pid"]   # one round: the call's
    # the pid the tool returned is the server's: a child of the watcher, a grandchild of the kernel
    out = stream_text(k.execute("r = v.chat('again', tools=[lookup, notes], tool_choice='pid', run_tools=True, "
                                "max_rounds=1, max_tokens=120, temperature=0, keep=False)"))
    server_pid = int(out.split("← ", 1)[1].split()[0])
    kernel_pid = k.value("os.getpid()")
    server = psutil.Process(server_pid)
    assert server.parent().parent().pid == kernel_pid
    assert "vllama_jupyter.mcp_child" in " ".join(server.parent().cmdline())
    # a tool the notebook has and one the server has: both offered, in one schema list
    names = k.value("[t['function']['name'] for t in __import__('vllama_jupyter.tools', fromlist=['x'])"
                    ".schemas(__import__('vllama_jupyter.tools', fromlist=['x']).make_tools([lookup, notes]))]")
    assert names[0] == "lookup" and {"where", "wait", "crash", "fail", "picture", "pid"} <= set(names)


def test_errors_of_the_tool_reach_the_model_and_the_cell_goes_on(k):
    k.execute(f"notes = v.mcp([sys.executable, {NOTES!r}], timeout=3)")
    msgs, out = cell(k, "--mcp notes --grammar BADARGS --run-tools --max-rounds 1")
    succeeded(msgs)
    assert "← error: bad arguments for where: name: 5 is not of type 'string'" in out
    msgs, out = cell(k, "--mcp notes --tool-choice fail --run-tools --max-rounds 1")
    succeeded(msgs)
    assert "← error: fail: Error executing tool fail" in out
    msgs, out = cell(k, "--mcp notes --grammar WAIT --run-tools --max-rounds 1")
    succeeded(msgs)
    assert "← error: wait: the MCP server notes did not answer within 3 s (raise timeout= in v.mcp" in out
    # the tool's error text went to the model: it is the tool message of the conversation it answered
    assert k.value("r.tool_calls[0]['function']['name']") == "wait"


def test_a_server_killed_mid_call_is_one_line_and_the_engine_goes_on(k):
    succeeded(k.execute(f"notes = v.mcp([sys.executable, {NOTES!r}])"))
    msgs, out = cell(k, "--mcp notes --tool-choice crash --run-tools --max-rounds 1")
    succeeded(msgs)
    assert "← error: crash: the MCP server notes stopped during the call (it wrote: crashing on purpose)" in out
    assert "notes" not in stream_text(k.execute("%vllama mcp list"))
    line = failed_line(k.execute("%%vllama --mcp notes --run-tools\nhi"))
    assert "no MCP server is named 'notes'" in line and "%vllama mcp add --name notes COMMAND" in line
    line = failed_line(k.execute("v.chat('hi', tools=[notes], run_tools=True)"))
    assert "the MCP server notes has stopped (it wrote: crashing on purpose): start it again" in line
    # the engine is as it was
    msgs, out = cell(k, "--max-tokens 5", "ROMEO:")
    succeeded(msgs)
    assert "tokens/s" in out
    # started again, it works again
    succeeded(k.execute(f"notes = v.mcp([sys.executable, {NOTES!r}])"))
    msgs, out = cell(k, "--mcp notes --grammar ROMEO --run-tools --max-rounds 1")
    assert '→ where(name="ROMEO")\n← Romeo is in Verona' in out


def test_an_interrupt_during_a_call_stops_the_cell_and_the_server_goes_on(k):
    import shutil
    import tempfile
    import threading
    import time

    short = Path(tempfile.mkdtemp(prefix="m"))   # a short path: the forced call spells it out in tokens
    mark = short / "w"
    succeeded(k.execute(f"notes = v.mcp([sys.executable, {NOTES!r}], timeout=60)\n"
                        f"WAITMARK = {forced('wait', {'seconds': 30, 'mark': str(mark)})!r}"))

    def interrupt_once_waiting():   # the server is inside the call: interrupt the cell there
        deadline = time.monotonic() + 120
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        k.km.interrupt_kernel()
    watcher = threading.Thread(target=interrupt_once_waiting)
    watcher.start()
    msgs, out = cell(k, "--mcp notes --grammar WAITMARK --run-tools --max-rounds 1")
    watcher.join()
    assert mark.exists() and msgs.status == "error" and "→ wait(seconds=30, mark=" in out and "← " not in out, out
    assert any(m["content"]["ename"] == "KeyboardInterrupt" for m in msgs if m["msg_type"] == "error")
    shutil.rmtree(short)
    msgs, out = cell(k, "--mcp notes --grammar ROMEO --run-tools --max-rounds 1")
    succeeded(msgs)
    assert '→ where(name="ROMEO")\n← Romeo is in Verona' in out


BAD = [
    ("v.mcp(42)", "an MCP server is a command line (e.g. 'python -m mcp_server_time'), a list of its words, or an http(s):// URL"),
    ("v.mcp('')", "the MCP server's command is empty"),
    ("v.mcp('python -m \"unclosed')", "could not read the MCP server's command (No closing quotation): check the quotes"),
    ("v.mcp('python -m mcp_server_time', env={'TZ': 1})", "env must be a dict of strings"),
    ("v.mcp('python -m mcp_server_time', timeout=-1)", "timeout must be"),
    ("v.mcp('python -m mcp_server_time', name='a,b')", "an MCP server's name is one word without commas"),
    ("v.mcp('python -m no_such_mcp_server_here')", "could not be started: "),
    ("v.mcp('/no/such/program')", "could not be started: cannot start /no/such/program: No such file or directory"),
    ("v.mcp([sys.executable, '-c', 'import time; time.sleep(60)'], timeout=1)", "did not answer within 1 s"),
    ("%vllama mcp add", "%vllama mcp add needs the server's command or URL"),
    ("%vllama mcp stop nosuch", "no MCP server is named 'nosuch'"),
    ("%vllama mcp frob", "argument action: invalid choice: 'frob'"),
    ("%%vllama --mcp nosuch\nhi", "no MCP server is named 'nosuch'"),
    ("v.chat('hi', tools=[lookup, v.mcp('python -m mcp_server_time --local-timezone UTC', name='time'), "
     "v.mcp('python -m mcp_server_time --local-timezone UTC', name='time2')])", "two tools are named 'get_current_time'"),
    ("v.mcp('python -m mcp_server_time', name='time')", "an MCP server named 'time' is already running"),
]


@pytest.mark.parametrize("code,line", BAD, ids=[b[0][:40] for b in BAD])
def test_bad_mcp_input_is_one_line_and_the_kernel_goes_on(k, code, line):
    succeeded(k.execute("v.mcp('python -m mcp_server_time --local-timezone UTC', name='time')"))   # in any order
    got = failed_line(k.execute(code))
    assert line in got, got
    assert k.value("1 + 1") == 2 and k.value("v.status()['loaded']") is True
    k.execute("%vllama mcp stop time2")


def test_a_streamable_http_server_and_its_death(k):
    proc = subprocess.Popen([sys.executable, NOTES, "http"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        succeeded(k.execute(f"web = v.mcp({url!r}, name='web')"))
        msgs, out = cell(k, "--mcp web --grammar ROMEO --run-tools --max-rounds 1")
        succeeded(msgs)
        assert '→ where(name="ROMEO")\n← Romeo is in Verona' in out
        proc.kill()
        proc.wait()
        msgs, out = cell(k, "--mcp web --grammar ROMEO --run-tools --max-rounds 1")
        succeeded(msgs)
        assert "← error: where: the MCP server web stopped during the call" in out
    finally:
        proc.kill()


def test_a_killed_kernel_leaves_no_mcp_server_process(tmp_path):
    kernel = Kernel()
    try:
        succeeded(kernel.execute(f"import sys, vllama_jupyter as v\nnotes = v.mcp([sys.executable, {NOTES!r}])\n"
                                 "t = v.mcp('python -m mcp_server_time')"))
        kernel_pid = kernel.value("__import__('os').getpid()")
        started = psutil.Process(kernel_pid).children(recursive=True)
        servers = [p for p in started if "mcp_server" in " ".join(p.cmdline())]
        assert len(servers) == 4, [p.cmdline() for p in started]   # two watchers, two servers
        os.kill(kernel_pid, signal.SIGKILL)
        for p in servers:
            assert wait_gone(p.pid, 10), f"left behind: {p.cmdline()}"
    finally:
        kernel.stop()


def test_a_tools_image_reaches_a_vision_model_and_a_text_model_is_told(qwen3, capsys):
    notes = v.mcp([sys.executable, NOTES], name="pictures")
    try:
        get_session().load(str(vision_model()), "llamacpp")
        r = v.chat("What did the tool draw?", tools=[notes], tool_choice="picture", run_tools=True, max_rounds=2,
                   max_tokens=60, temperature=0, keep=False)
        shown = capsys.readouterr().out
        assert "→ picture()" in shown and "(+ 1 image(s), shown to the model)" in shown
        seen = r.record.get("images") or []
        assert len(seen) == 1 and len(seen[0]["sha256"]) == 64, r.record.get("images")

        get_session().load(qwen3, "llamacpp")
        v.chat("What did the tool draw?", tools=[notes], tool_choice="picture", run_tools=True, max_rounds=1,
               max_tokens=60, temperature=0, keep=False)
        assert "← \n[1 image(s) this model cannot see]" in capsys.readouterr().out
    finally:
        mcp_tools.stop_all()
