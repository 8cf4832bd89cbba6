"""A real IPython kernel driven through jupyter_client: what a Jupyter client sees of a cell
(benchmarks time it; needs jupyter_client and ipykernel)."""
from __future__ import annotations

import queue
import time

from jupyter_client.manager import start_new_kernel


class Kernel:
    def __init__(self, extra_env: dict | None = None, cwd: str | None = None):
        import os
        env = dict(os.environ, **(extra_env or {}))
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env, cwd=cwd or os.getcwd())

    def execute(self, code: str, timeout: float = 300, on_msg=None) -> "Output":
        """Run code; return every iopub message of that execution (each with a 'recv' time),
        with the execute reply's status ('ok' or 'error') as `.status`."""
        msg_id = self.kc.execute(code)
        msgs = Output()
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no idle status within {timeout}s for: {code[:80]!r}")
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msg["recv"] = time.perf_counter()
            msgs.append(msg)
            if on_msg:
                on_msg(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                while True:
                    reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
                    if reply["parent_header"].get("msg_id") == msg_id:
                        msgs.status = reply["content"]["status"]
                        return msgs

    def value(self, expr: str):
        """The repr of `expr` evaluated in the kernel, read back with ast.literal_eval."""
        import ast
        for m in self.execute(f"print(repr({expr}))"):
            if m["msg_type"] == "stream":
                return ast.literal_eval(m["content"]["text"].strip())
            if m["msg_type"] == "error":
                raise RuntimeError("\n".join(m["content"]["traceback"]))
        raise RuntimeError(f"no output for {expr}")

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


class Output(list):
    """The iopub messages of one execution; `status` is the execute reply's."""

    status: str = "ok"


def of_type(msgs: list[dict], kind: str) -> list[dict]:
    return [m for m in msgs if m["msg_type"] == kind]


def stream_text(msgs: list[dict], name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in of_type(msgs, "stream") if m["content"]["name"] == name)


def open_comm(kernel: Kernel, target: str) -> str:
    """Open a comm from the client side, as a front end does; return its id."""
    import uuid

    comm_id = uuid.uuid4().hex
    msg = kernel.kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": target, "data": {}})
    kernel.kc.shell_channel.send(msg)
    return comm_id
