"""The one error type users see: a single line saying what is wrong and how to fix it."""


class VllamaError(Exception):
    """A user-facing error. Its message is one line: what is wrong, then how to fix it.
    In IPython and Jupyter it fails the cell and shows as that one line, with no traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class BusyError(VllamaError):
    """The session's engine is already generating (another cell or the panel holds it)."""


def notice(message: str) -> None:
    """One line to the user that is not an error (in a cell: on its stderr)."""
    import sys

    print(f"vllama: {message}", file=sys.stderr, flush=True)


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters (its type when it has no text)."""
    text = str(e).strip()
    return " ".join(text.splitlines()[0].split())[:limit] if text else type(e).__name__
