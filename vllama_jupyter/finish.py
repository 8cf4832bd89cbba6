"""Why a generation ended, in our words and on the wire (OpenAI's finish_reason)."""
from __future__ import annotations

STOP, LENGTH, CANCELLED, INTERRUPTED, ERROR = "stop", "length", "cancelled", "interrupted", "error"
ENDED_EARLY = (INTERRUPTED, CANCELLED)   # the caller ended it; the partial output is kept
_FROM_WIRE = {"abort": CANCELLED}
_TO_WIRE = {CANCELLED: "abort", INTERRUPTED: "abort", None: STOP}


def from_wire(reason: str | None, default: str | None = None) -> str | None:
    """An engine's or server's finish_reason in our words (`default` when it gives none)."""
    return _FROM_WIRE.get(reason, reason) if reason else default


def to_wire(reason: str | None) -> str:
    """Our finish reason as an OpenAI response says it."""
    return _TO_WIRE.get(reason, reason)
