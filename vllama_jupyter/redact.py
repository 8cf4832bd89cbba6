"""Secrets out of text before anything shows, cuts or reformats it: the whole value and any piece
of it long enough to matter (a message cut in the middle of a key still carries most of it)."""
from __future__ import annotations

FRAGMENT = 6   # the shortest piece of a secret that is removed
MASK = "***"


def redact(text: str, secret: str) -> str:
    """`text` with every run of it that is a piece of `secret` (FRAGMENT characters or more) masked.
    Secrets shorter than FRAGMENT are masked whole."""
    if not secret or not text:
        return text
    if len(secret) < FRAGMENT:
        return text.replace(secret, MASK)
    pieces = {secret[i:i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
    out, i = [], 0
    while i < len(text):
        if text[i:i + FRAGMENT] in pieces:
            j = i + FRAGMENT
            while j < len(text) and text[i:j + 1] in secret:   # the longest piece starting here
                j += 1
            out.append(MASK)
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
