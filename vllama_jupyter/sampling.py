"""Sampling parameters shared by every engine, validated once."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import VllamaError


@dataclass(frozen=True)
class Sampling:
    """How to sample. temperature 0 means greedy; seed makes sampling repeatable."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    json_schema: dict | None = None
    logprobs: int | None = None   # None: off; N: each token's log-probability and the N most likely

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        _check(self)

    @classmethod
    def make(cls, sampling: "Sampling | None" = None, **overrides: Any) -> "Sampling":
        """Start from `sampling` (or the defaults) and apply the non-None keyword overrides."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise VllamaError(
                f"unknown sampling option {unknown[0]!r}: use one of {', '.join(sorted(names))}")
        base = sampling or cls()
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _check(s: Sampling) -> None:
    if isinstance(s.max_tokens, bool) or not isinstance(s.max_tokens, int) or s.max_tokens < 1:
        raise VllamaError(f"max_tokens must be a whole number >= 1 (got {s.max_tokens!r})")
    if not _number(s.temperature) or not 0.0 <= s.temperature <= 2.0:
        raise VllamaError(f"temperature must be between 0 and 2 (got {s.temperature!r}); 0 means greedy")
    if not _number(s.top_p) or not 0.0 < s.top_p <= 1.0:
        raise VllamaError(f"top_p must be in (0, 1] (got {s.top_p!r})")
    if isinstance(s.top_k, bool) or not isinstance(s.top_k, int) or s.top_k < 0:
        raise VllamaError(f"top_k must be a whole number >= 0, 0 meaning off (got {s.top_k!r})")
    if s.seed is not None and (isinstance(s.seed, bool) or not isinstance(s.seed, int) or not 0 <= s.seed < 2**32):
        raise VllamaError(f"seed must be a whole number from 0 to {2**32 - 1} (got {s.seed!r})")
    if any(not isinstance(x, str) or not x for x in s.stop):
        raise VllamaError("each stop sequence must be a non-empty string")
    if s.json_schema is not None and not isinstance(s.json_schema, dict):
        raise VllamaError(f"json_schema must be a dict holding a JSON schema (got {type(s.json_schema).__name__})")
    if s.logprobs is not None and (isinstance(s.logprobs, bool) or not isinstance(s.logprobs, int)
                                   or not 0 <= s.logprobs <= MAX_LOGPROBS):
        raise VllamaError(f"logprobs must be a whole number from 0 to {MAX_LOGPROBS}: how many alternatives "
                          f"to show for each token (got {s.logprobs!r})")


MAX_LOGPROBS = 20


def with_seed(s: Sampling) -> Sampling:
    """`s` with the seed a sampled generation will use: the one given, else a fresh one, so the
    record can always say how to repeat it. Greedy decoding needs none."""
    if s.seed is not None or s.temperature == 0:
        return s
    import random

    return replace(s, seed=random.randrange(2**31))


def settings(s: Sampling) -> dict:
    """Every sampling setting as JSON-ready values (Sampling.make(**settings(s)) gives `s` back)."""
    out = {f.name: getattr(s, f.name) for f in fields(s)}
    out["stop"] = list(s.stop)
    return out


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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
