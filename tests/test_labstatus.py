"""The kernel side of the JupyterLab status bar: the "vllama" comm in a real kernel."""
import queue
import time

from vllama_jupyter.bench.kernel import Kernel, open_comm


def comm_messages(k: Kernel, comm_id: str, seconds: float = 3.0, until=None) -> list[dict]:
    """iopub messages of this comm (any parent) for a while, or until `until(data)` is true (a
    failure when no message meets it in time)."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msg = k.kc.get_iopub_msg(timeout=0.1)
        except queue.Empty:
            continue
        if msg["content"].get("comm_id") == comm_id:
            out.append(msg)
            if until and msg["msg_type"] == "comm_msg" and until(msg["content"]["data"]):
                return out
    assert until is None, f"no message of the comm met the condition in {seconds} s: {out}"
    return out


def test_status_comm_pushes_engine_model_and_state():
    k = Kernel()
    try:
        # without the extension there is no target: the kernel closes the comm
        early = open_comm(k, "vllama")
        msgs = comm_messages(k, early, 2.0)
        assert [m["msg_type"] for m in msgs] == ["comm_close"]
        k.execute("%load_ext vllama_jupyter")
        cid = open_comm(k, "vllama")
        first = comm_messages(k, cid, 5.0, until=lambda d: True)
        assert first[-1]["content"]["data"] == {"loaded": False, "engine": None, "model": None,
                                                "state": "idle", "tokens_per_s": None, "shared": None}
        k.kc.execute("%%vllama -t 0 --max-tokens 200 --quiet\nROMEO:\n")
        msgs = comm_messages(k, cid, 60.0, until=lambda d: d["state"] == "idle" and d["tokens_per_s"])
        states = [m["content"]["data"] for m in msgs if m["msg_type"] == "comm_msg"]
        assert any(d["state"] == "loading" for d in states)
        assert any(d["state"] == "generating" and d["engine"] == "llamacpp" for d in states)
        final = states[-1]
        assert final["state"] == "idle" and final["model"] == "tiny-shakespeare" and final["tokens_per_s"] > 0
        k.kc.execute("%vllama unload")
        msgs = comm_messages(k, cid, 30.0, until=lambda d: not d["loaded"])
        assert msgs[-1]["content"]["data"]["loaded"] is False
    finally:
        k.stop()
