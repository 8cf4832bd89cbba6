"""`{name}` in a prompt: variables from the user namespace by name, attribute and index lookup.
Nothing is evaluated; private names (leading underscore) and unknown names are left as written."""
from __future__ import annotations

import re

from .errors import VllamaError

_FIELD = re.compile(r"\{([A-Za-z]\w*(?:\.[A-Za-z]\w*|\[[^\[\]{}]+\])*)\}")
_PART = re.compile(r"\.([A-Za-z]\w*)|\[([^\[\]{}]+)\]")
_MISSING = object()


def _lookup(expr: str, namespace: dict):
    head = re.match(r"[A-Za-z]\w*", expr).group(0)
    if head not in namespace:
        return _MISSING
    value = namespace[head]
    for attr, index in _PART.findall(expr[len(head):]):
        try:
            if attr:
                value = getattr(value, attr)
            else:
                key = index.strip()
                if re.fullmatch(r"-?\d+", key):
                    value = value[int(key)]
                else:
                    value = value[key.strip("'\"")]
        except Exception:
            return _MISSING
    return value


def _text(expr: str, value) -> str:
    try:
        text = str(value)
    except Exception as e:
        raise VllamaError(f"{{{expr}}} cannot be turned into text ({type(e).__name__} in its __str__): "
                          "put a string in the variable, or use --no-interpolate") from None
    if not isinstance(text, str):
        raise VllamaError(f"{{{expr}}} cannot be turned into text: use --no-interpolate")
    return text


def interpolate(text: str, namespace: dict) -> str:
    """Replace each `{field}` whose lookup succeeds with str(value); leave the rest alone."""
    def sub(m: re.Match) -> str:
        value = _lookup(m.group(1), namespace)
        return m.group(0) if value is _MISSING else _text(m.group(1), value)
    return _FIELD.sub(sub, text)
