"""Prompts for benchmarks: a fixed list, the user's own (list or DataFrame column), or random token
prompts of a given length drawn from the model's own vocabulary."""
from __future__ import annotations

import random

from ..errors import VllamaError

SPEAKERS = ("ROMEO", "JULIET", "KING HENRY", "QUEEN MARGARET", "GLOUCESTER", "NURSE", "TYBALT",
            "HAMLET", "FIRST CITIZEN", "MENENIUS", "LADY MACBETH", "PROSPERO")
FIXED = tuple(f"{name}:\n" for name in SPEAKERS)


def fixed(n: int) -> list[str]:
    return [FIXED[i % len(FIXED)] for i in range(n)]


def from_items(items, n: int | None = None) -> list:
    """Prompts from a list or a pandas Series / DataFrame column, repeated to `n` if given."""
    values = list(items.tolist() if hasattr(items, "tolist") else items)
    if not values:
        raise VllamaError("the workload has no prompts")
    if any(not isinstance(v, (str, list)) for v in values):
        raise VllamaError("each prompt in the workload must be text or a list of token ids")
    return values if n is None else [values[i % len(values)] for i in range(n)]


def random_tokens(engine, n: int, input_len: int, seed: int = 0) -> list[list[int]]:
    """`n` prompts of exactly `input_len` token ids (BOS first), uniform over the vocabulary
    without special and byte tokens."""
    vocab = engine.vocab_size()   # a clear error on engines that do not know it
    if input_len < 2:
        raise VllamaError("input_len must be at least 2 (BOS and one token)")
    bos = engine.tokenize("x")[0]
    low = min(259, vocab // 2)  # skip <unk>, <s>, </s> and byte-fallback tokens
    rng = random.Random(seed)
    return [[bos] + [rng.randrange(low, vocab) for _ in range(input_len - 1)] for _ in range(n)]
