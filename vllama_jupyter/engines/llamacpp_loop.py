"""The llama.cpp engine's per-token path: incremental detokenizing, the token loop (stops,
max_tokens, max_thinking, logprobs) over speculative.Decoder, and each token's logprobs read
from the logits it was sampled from. Each token costs the same, however long the output grows."""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass

from ..result import Delta, TokenLogprob
from ..sampling import Sampling, StopMatcher
from . import llama_private as private
from . import speculative
from .llamacpp_sampler import Chain, plain
from .logprobs import log_softmax_top


class Detokenizer:
    """Token ids to text one token at a time; UTF-8 split across tokens comes out whole.
    `pieces` caches each token's bytes (shared across requests of one model)."""

    def __init__(self, llm, pieces: dict[int, bytes] | None = None):
        self.llm = llm
        self.pieces = {} if pieces is None else pieces
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.decode = self.utf8.decode

    def feed(self, tok: int) -> str:
        piece = self.pieces.get(tok)
        if piece is None:
            piece = self.pieces[tok] = self.llm.detokenize([tok])
        return self.decode(piece)

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


@dataclass(eq=False)
class Handover:
    """A request leaving this loop to go on beside others in the batch context: the tokens in its
    KV cache and those cells (llama.cpp's saved sequence state), the token it drew (not yet in the
    cache), how many it made, and its sampler, text and logprob state, so it goes on where it was."""
    ids: list
    tok: int
    n: int
    kv: bytes
    chain: object
    detok: object
    stops: object
    held: list
    scored: list
    lp: object


def token_loop(eng, ids: list, s: Sampling, max_new: int, grammar, reuse: bool, limit=None, drafts=None,
               join=None):
    """The request's deltas: tokens from the speculative.Decoder, detokenized as they come, cut
    at stops and max_new, the thought closed after limit[0] tokens (max_thinking), logprobs kept.
    When join(), given, says other requests wait, the loop ends by yielding a Handover."""
    llm = eng.llm
    if not isinstance(ids, list):   # a prompt with images: mtmd writes it into the cache first
        ids = ids.evaluate(eng.projector, llm)
    elif not reuse:
        llm.reset()   # no prefix of an earlier request is kept
    chain = Chain(eng, s, grammar)
    private.use_sampler(llm, chain)   # generate() draws the first token with it, our loop the rest
    pick = speculative.greedy(llm) if s.temperature == 0 and grammar is None and plain(s) else None
    generate = lambda prompt: speculative.Decoder(llm, llm.generate(prompt), drafts, pick)  # noqa: E731
    tokens = generate(ids)
    out_ids: list[int] = []
    thought = 0
    detok = Detokenizer(llm, eng._pieces)
    stops = StopMatcher(s.stop)
    # the per-token path: names bound once, no stop matching when there are no stops
    feed, clock, eog = detok.feed, time.perf_counter, (None if s.ignore_eos else eng._is_eog)
    cut = stops.feed if s.stop else (lambda text: (text, False))
    score = None if s.logprobs is None else scorer(eng, s.logprobs, lambda: getattr(tokens, "row", -1))
    held: list[int] = []
    scored: list[TokenLogprob] = []
    lp = None
    n = 0
    kept = False   # the sampler went on with the request into the batch
    try:
        while True:   # once more after a thought is closed (max_thinking)
            for tok in tokens:
                if eog is not None and eog(tok):
                    yield Delta(detok.flush() + stops.flush(), tuple(held), clock(), "stop", logprobs=lp)
                    return
                n += 1
                held.append(tok)
                if limit is not None:
                    out_ids.append(tok)
                if score is not None:  # from this step's logits, before the next token is computed
                    scored.append(score(tok))
                    lp = tuple(scored)
                piece, restart = feed(tok), False
                if limit is not None:
                    follow = limit[1]
                    before = follow.state == "reasoning"
                    follow.feed(piece)
                    thought += before or follow.state == "reasoning"
                    if thought >= limit[0] and follow.state == "reasoning" and n + len(limit[2]) < max_new:
                        # the thought is long enough: close it (as the model would) and let it answer
                        tokens.close()
                        close_ids = limit[2]
                        n += len(close_ids)
                        out_ids.extend(close_ids)
                        limit = None
                        restart = True
                text, hit = cut(piece)
                if hit or n >= max_new:
                    if not hit:
                        text += cut(detok.flush())[0] + stops.flush()
                    yield Delta(text, tuple(held), clock(), "stop" if hit else "length", logprobs=lp)
                    return
                if text:
                    yield Delta(text, tuple(held), clock(), logprobs=lp)
                    held = []
                    if score is not None:
                        scored, lp = [], ()
                if restart:   # the closing tokens, as a delta of their own
                    yield Delta("".join(feed(t) for t in close_ids), tuple(held) + tuple(close_ids), clock())
                    held = []
                    tokens = generate(ids + out_ids)
                    break
                if join is not None and limit is None and not tokens.ready and join():
                    kept = True
                    yield Handover(llm.input_ids[:llm.n_tokens].tolist(), tok, n, private.sequence_state(llm),
                                   chain, detok, stops, held, scored, lp)
                    return
            else:
                return
    finally:
        tokens.close()
        private.use_sampler(llm, None)
        if not kept:
            chain.close()

def scorer(eng, n: int, row=lambda: -1):
    """token id -> TokenLogprob from the logits the token was just sampled from."""
    import llama_cpp
    import numpy as np

    ctx, vocab = private.context(eng.llm), eng.llm.n_vocab()
    text = lambda tok: piece_text(eng, tok)  # noqa: E731
    work = np.empty(vocab, np.float32)
    n = min(n, vocab)

    def score(tok: int) -> TokenLogprob:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row()), shape=(vocab,))
        lse, best = log_softmax_top(logits, n, work)
        top = tuple((text(int(i)), float(logits[i]) - lse) for i in best)
        return TokenLogprob(text(tok), float(logits[tok]) - lse, top, tok)
    return score

def piece_text(eng, tok: int) -> str:
    piece = eng._pieces.get(tok)
    if piece is None:
        piece = eng._pieces[tok] = eng.llm.detokenize([tok])
    return piece.decode("utf-8", "replace")
