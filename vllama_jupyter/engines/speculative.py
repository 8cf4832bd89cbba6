"""Our token loop for llama.cpp after the first token: one token a step, or, with
speculative="ngram" (prompt lookup), several: the tokens that followed the last few tokens where
they appeared before (in the prompt or the answer so far) are drafted, and one batch checks them
all; each position is sampled from its own logits, so the output is the one the model gives
without speculation. An edit of a passage in the prompt repeats most of it.

Our own loop rather than llama-cpp-python's generate() (which evaluates the prompt and gives the
first token here): a greedy request takes the largest logit (~10 us) where the sampler chain
copies the whole vocabulary first (~110 us on 151,936 tokens), for every checked position too.
Rather than its draft_model: that one turns on logits for every token, the prompt's included,
and keeps an n_ctx x vocabulary float32 copy of them (5 GB for 8,192 tokens of a 151,936-token
vocabulary); here only the drafted positions get logits. Our own lookup too: its
LlamaPromptLookupDecoding falls back to one-token matches (drafts that mostly fail) and takes the
earliest match, where the latest is the one an edit is copying from.

Where drafts keep failing (less than half of one taken), lookups pause (1, 2, 4 ... 64 steps), so
a model that does not repeat runs at about its plain speed."""
from __future__ import annotations

from ..errors import VllamaError
from . import llama_private as private

KINDS = ("ngram",)
DRAFT_MAX = 8     # drafted tokens per step, at most
NGRAM = (3, 2)    # runs of recent tokens looked up, longest first
PAUSE_MAX = 64    # steps without a lookup after drafts failed, at most


def check(value) -> str | None:
    if value is None or value is False:
        return None
    if value not in KINDS:
        raise VllamaError(f"speculative={value!r} is not a kind this engine knows: use speculative='ngram' "
                          "(prompt lookup), or leave it out")
    return value


def counts(kind: str) -> dict:
    """Drafted and accepted tokens of one request (its record; the loop adds to it as it goes)."""
    return {"kind": kind, "drafted": 0, "accepted": 0}


def vllm_config(kind: str) -> dict:
    """vLLM's own prompt lookup, with the same draft length and runs looked up as here."""
    return {"method": kind, "num_speculative_tokens": DRAFT_MAX, "prompt_lookup_max": NGRAM[0],
            "prompt_lookup_min": NGRAM[-1]}


class Decoder:
    """Tokens from llama.cpp, several per batch where drafts hold (`counts` given: speculation on).
    `first` is llama-cpp-python's generator: it evaluates the prompt (re-using a cached prefix
    where asked) and samples the first token with the request's sampler (and grammar), which this
    loop goes on using; `pick(row)` chooses from a logits row (the sampler, or the largest logit
    for greedy requests). `row` is the logits row the last token came from."""

    def __init__(self, llm, first, counts: dict | None = None, pick=None):
        self.llm, self.first, self.counts = llm, first, counts
        self.pick = pick or (lambda row: private.sample(llm, row))
        self.row = -1
        self.ready: list[int] = []   # sampled tokens of the last batch not handed out yet
        self.pending: int | None = None   # sampled, not yet in the KV cache
        self.width = DRAFT_MAX
        self.n_ctx = llm.n_ctx()
        self.pause, self.wait = 0, 0   # steps to skip after a failed draft, and how many are left
        self.lookup = Lookup()

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self.pending is None:   # the prompt, through llama-cpp-python
            tok = next(self.first)
            self.first.close()   # before it evaluates that token: this loop does
            if self.counts is not None:
                self.lookup.extend(self.llm.input_ids[:self.llm.n_tokens].tolist())
            self.pending = tok
            return tok
        if self.ready:
            self.row, tok = self.ready.pop(0)
            return tok
        if self.counts is None or self.wait:   # one token
            if self.counts is not None:
                self.lookup.extend((self.pending,))
                self.wait -= 1
            llm = self.llm
            private.decode(llm, (self.pending,), llm.n_tokens, False)
            llm.input_ids[llm.n_tokens] = self.pending
            llm.n_tokens += 1
            self.row, self.pending = -1, self.pick(-1)
            return self.pending
        self.lookup.extend((self.pending,))
        self._step()
        self.row, tok = self.ready.pop(0)
        return tok

    def _step(self) -> None:
        llm = self.llm
        past = llm.n_tokens
        room = self.n_ctx - past - 1
        draft = self.lookup(min(self.width, room)) if room > 0 else []
        batch = [self.pending, *draft]
        private.decode(llm, batch, past, True)
        llm.input_ids[past:past + len(batch)] = batch
        llm.n_tokens = past + len(batch)
        for i in range(len(batch)):
            row = i - len(batch)
            tok = self.pick(row)
            self.ready.append((row, tok))
            if i + 1 < len(batch) and tok != batch[i + 1]:   # the draft went wrong here
                llm.n_tokens = past + i + 1
                private.forget_from(llm, llm.n_tokens)
                break
        taken = len(self.ready) - 1
        self.counts["drafted"] += len(draft)
        self.counts["accepted"] += taken
        if draft:   # narrow and pause while drafts fail, widen while they hold
            self.width = min(DRAFT_MAX, self.width * 2) if taken == len(draft) else max(1, taken or self.width // 2)
            self.pause = 0 if 2 * taken >= len(draft) else min(PAUSE_MAX, max(1, self.pause * 2))
            self.wait = self.pause
        self.lookup.extend(draft[:taken])
        self.pending = self.ready[-1][1]

    def close(self) -> None:
        self.first.close()


def greedy(llm):
    """pick(row) for a greedy request without a grammar: the largest logit, the first of equals,
    as llama.cpp's greedy sampler takes it."""
    import llama_cpp
    import numpy as np

    ctx, vocab, logits = private.context(llm), llm.n_vocab(), llama_cpp.llama_get_logits_ith
    return lambda row: int(np.argmax(np.ctypeslib.as_array(logits(ctx, row), shape=(vocab,))))


class Lookup:
    """The latest earlier position of each run of NGRAM tokens, kept up to date as tokens come:
    a lookup costs a dict access, however long the prompt (a scan of it costs ~150 us a token)."""

    def __init__(self) -> None:
        self.seq: list[int] = []
        self.after: dict[tuple, int] = {}   # run of tokens -> where the token after its latest occurrence is
        self.done = 0   # runs ending before this position are indexed

    def extend(self, tokens) -> None:
        self.seq.extend(tokens)

    def __call__(self, n: int) -> list[int]:
        seq, after = self.seq, self.after
        for end in range(self.done, len(seq) - 1):   # the last run is what is looked up, not indexed
            for size in NGRAM:
                if end + 1 >= size:
                    after[tuple(seq[end + 1 - size:end + 1])] = end + 1
        self.done = max(self.done, len(seq) - 1)
        for size in NGRAM:
            start = after.get(tuple(seq[-size:]))
            if start is not None:
                return seq[start:start + n]
        return []
