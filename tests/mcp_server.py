"""An MCP server written with the SDK's MCPServer (FastMCP), for the tests: run as
`python tests/mcp_server.py` (stdio) or `python tests/mcp_server.py http` (streamable HTTP on a
socket bound to port 0 and listening before serving; the URL is the first line on stdout)."""
import os
import socket
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("notes")
NOTES = {"ROMEO": "Romeo is in Verona", "JULIET": "Juliet is on the balcony"}


@server.tool()
def where(name: str) -> str:
    """Where a character of the play is."""
    return NOTES.get(name.upper(), f"nobody called {name} is in the play")


@server.tool()
def wait(seconds: float, mark: str = "") -> str:
    """Wait, then say so; `mark`: a file written when the wait starts."""
    if mark:
        open(mark, "w").close()
    time.sleep(seconds)
    return f"waited {seconds} s"


@server.tool()
def crash() -> str:
    """The server process dies during this call."""
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
def fail() -> str:
    """A tool that reports an error."""
    raise ValueError("the balcony is closed")


@server.tool()
def picture() -> Image:
    """A 2x2 PNG."""
    return Image(data=PNG, format="png")


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73000000164944415478"
                    "9c633c2127c7c0c0c0c4c0c0c0c0c000000d0401087d71ca660000000049454e44ae426082")

if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()   # connections wait in the backlog until uvicorn takes the socket
        print(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
        config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
    else:
        server.run()
