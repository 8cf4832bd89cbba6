"""Sampling parameters shared by every engine: the fields and checks of options.OPTIONS."""
from __future__ import annotations

from dataclasses import field, fields, make_dataclass, replace
from typing import Any

from .errors import VllamaError
from .options import MAX_LOGPROBS, OPTIONS  # noqa: F401  (MAX_LOGPROBS: re-exported)


def _post_init(self) -> None:
    for o in OPTIONS:
        object.__setattr__(self, o.name, o.check(getattr(self, o.name)))


@classmethod
def _make(cls, sampling=None, **overrides: Any):
    """Start from `sampling` (or the defaults) and apply the non-None keyword overrides."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise VllamaError(f"unknown sampling option {unknown[0]!r}: use one of {', '.join(sorted(names))}")
    base = sampling or cls()
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


Sampling = make_dataclass(
    "Sampling", [(o.name, Any, field(default=o.default)) for o in OPTIONS], frozen=True,
    namespace={"__post_init__": _post_init, "make": _make, "__module__": __name__,
               "__doc__": "How to generate: " + "; ".join(f"{o.name} ({o.help})" for o in OPTIONS) + "."})


def with_seed(s):
    """`s` with the seed a sampled generation will use: the one given, else a fresh one, so the
    record can always say how to repeat it. Greedy decoding needs none."""
    if s.seed is not None or s.temperature == 0:
        return s
    import random

    return replace(s, seed=random.randrange(2**31))


def settings(s) -> dict:
    """Every sampling setting as JSON-ready values (Sampling.make(**settings(s)) gives `s` back)."""
    out = {f.name: getattr(s, f.name) for f in fields(s)}
    for o in OPTIONS:
        if o.kind == "texts":
            out[o.name] = list(out[o.name])
        elif o.kind == "bias" and out[o.name] is not None:
            out[o.name] = {str(k): v for k, v in out[o.name].items()}   # as JSON keeps them
    return out


class StopMatcher:
    """Cuts generated text at the first stop sequence, holding back text that may start one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.hold = max((len(x) for x in stops), default=0) - 1
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop sequence was hit)."""
        if not self.stops:
            return text, False
        self.pending += text
        cut = min((i for i in (self.pending.find(x) for x in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            return out, True
        keep = self.hold
        out = self.pending[:-keep] if keep > 0 else self.pending
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
