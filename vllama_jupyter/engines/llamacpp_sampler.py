"""A request's sampler on llama.cpp: llama.cpp's own sampler objects (its public C API), chained
in the order llama.cpp's tools use: logit bias, penalties, DRY, grammar, top-k, typical, top-p,
min-p, XTC, temperature, then a seeded draw (or the largest, for temperature 0). With every
control neutral the chain is the one llama-cpp-python builds, so the same seed gives the same
tokens. min_tokens and banned text hold tokens back by setting their logits to -inf in the row
the chain reads, restored once the token is drawn, so logprobs stay the model's own.

The penalties look back over the tokens this request generated (the last repeat_last_n of
them, 64 unless set; -1: the whole context), as llama-cpp-python's sampler does; vLLM's
repetition_penalty also counts the prompt's tokens."""
from __future__ import annotations

import ctypes

from ..options import SAMPLERS, is_set
from . import llama_private as private

PENALTY_LAST_N = 64   # llama.cpp's default repeat_last_n
DRY_BASE, DRY_ALLOWED_LENGTH = 1.75, 2   # llama.cpp's defaults
DRY_BREAKERS = ("\n", ":", "\"", "*")     # llama.cpp's default sequence breakers


def plain(s) -> bool:
    """Whether no sampling control is set (the greedy fast path may take the largest logit)."""
    return not any(is_set(name, getattr(s, name)) for name in SAMPLERS)


class Chain:
    """The sampler generate() and our token loop draw every token of one request from
    (llama_private.use_sampler installs it). `sample(ctx, row)` as llama-cpp-python's sampler."""

    def __init__(self, eng, s, grammar=None, row=None):
        import llama_cpp as C

        llm = eng.llm
        n_vocab, n_ctx = llm.n_vocab(), llm.n_ctx()
        self.chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda sampler: C.llama_sampler_chain_add(self.chain, sampler)  # noqa: E731
        if s.logit_bias:
            biases = (C.llama_logit_bias * len(s.logit_bias))(*(C.llama_logit_bias(t, b) for t, b in s.logit_bias.items()))
            add(C.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
        last_n = PENALTY_LAST_N if s.repeat_last_n is None else n_ctx if s.repeat_last_n == -1 else s.repeat_last_n
        add(C.llama_sampler_init_penalties(n_vocab, last_n, s.repetition_penalty, s.frequency_penalty, s.presence_penalty))
        if s.dry_multiplier:
            breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*(b.encode() for b in DRY_BREAKERS))
            add(C.llama_sampler_init_dry(private.vocab(llm), s.dry_multiplier, DRY_BASE, DRY_ALLOWED_LENGTH,
                                         n_ctx, breakers, len(DRY_BREAKERS)))
        if grammar is not None:
            add(C.llama_sampler_init_grammar(private.vocab(llm), *private.grammar_source(grammar)))
        if s.temperature > 0:
            add(C.llama_sampler_init_top_k(s.top_k))
            add(C.llama_sampler_init_typical(s.typical_p, 1))
            add(C.llama_sampler_init_top_p(s.top_p, 1))
            add(C.llama_sampler_init_min_p(s.min_p, 1))
        if s.xtc_probability:
            add(C.llama_sampler_init_xtc(s.xtc_probability, s.xtc_threshold, 1, s.seed or 0))
        if s.temperature > 0:
            add(C.llama_sampler_init_temp(s.temperature))
            add(C.llama_sampler_init_dist(s.seed or 0))
        else:
            add(C.llama_sampler_init_greedy())
        self._draw, self._free = C.llama_sampler_sample, C.llama_sampler_free
        self.out: list[int] = []   # the tokens drawn so far
        self.min_tokens = s.min_tokens
        self.eog = eng.eog_ids() if s.min_tokens else ()
        self.banned = [seq for seq in (eng.banned_ids(text) for text in s.banned) for seq in seq]
        self.row = (row or _row(llm)) if (self.eog or self.banned) else None   # row(idx): the logits it draws from

    def sample(self, ctx, idx: int = -1) -> int:
        held = self._held()
        if held:
            row = self.row(idx)
            saved = row[held].copy()
            row[held] = float("-inf")
        tok = self._draw(self.chain, ctx.ctx, idx)
        if held:
            row[held] = saved
        self.out.append(tok)
        return tok

    def _held(self) -> list[int]:
        """The tokens that may not come next: end of text before min_tokens, the last token of a
        banned text whose other tokens were just generated."""
        out = self.out
        held = list(self.eog) if len(out) < self.min_tokens else []
        for seq in self.banned:
            if len(seq) == 1 or out[len(out) - len(seq) + 1:] == seq[:-1]:
                held.append(seq[-1])
        return held

    def close(self) -> None:
        if self.chain is not None:
            self._free(self.chain)
            self.chain = None

    __del__ = close


def _row(llm):
    """idx -> the logits row llama.cpp samples from, as a writable numpy view."""
    import llama_cpp
    import numpy as np

    ctx, vocab = private.context(llm), llm.n_vocab()
    return lambda idx: np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, idx), shape=(vocab,))
