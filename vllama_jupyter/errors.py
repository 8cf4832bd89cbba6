"""The one error type users see: a single line saying what is wrong and how to fix it."""


class VllamaError(Exception):
    """A user-facing error. Its message is one line: what is wrong, then how to fix it."""


class BusyError(VllamaError):
    """The session's engine is already generating (another cell or the panel holds it)."""
