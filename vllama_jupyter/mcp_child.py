"""An MCP server's command, run so that it ends with the kernel, even a killed one: this process
starts the command, watches the kernel's pid, and kills its own process group (the server and
anything the server started) when the kernel is gone. Polling the parent works on every POSIX
system, unlike Linux's PR_SET_PDEATHSIG, and it reaches the server's own children too."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

POLL_S = 0.2


def main() -> int:
    kernel, argv = int(sys.argv[1]), sys.argv[2:]
    if os.getpgrp() != os.getpid():
        os.setsid()   # killpg(0) must never reach the kernel's group
    try:
        child = subprocess.Popen(argv)   # the MCP server: stdin, stdout and stderr are ours
    except OSError as e:
        print(f"cannot start {argv[0]}: {e.strerror}", file=sys.stderr)
        return 127

    def watch():
        while os.getppid() == kernel:
            time.sleep(POLL_S)
        os.killpg(0, signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
