"""Several completions at once on llama.cpp (v.batch): a second context over the loaded model
with PARALLEL sequences in one unified KV cache. Each step is one llama_decode holding the next
token of every running sequence and, in the room left in the batch, the next piece of the
prompts of sequences that joined (llama-server's way: running streams never wait for a whole
prompt). Each sequence has its own sampler chain (seed, grammar, penalties), stops, max_tokens
and logprobs; it frees its KV cells when it ends, and the next prompt joins in its place.

On a CPU one step of B sequences costs far less than B steps of one (the weights are read once
per step): Gemma 3 270M Q4_K_M decodes 16 sequences in ~5× one's step time."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import VllamaError
from ..options import Option
from ..result import Delta, TokenLogprob
from ..sampling import StopMatcher
from .llamacpp_loop import Detokenizer, piece_text
from .llamacpp_sampler import Chain, plain
from .logprobs import log_softmax_top

PARALLEL = Option("parallel", "int", 16, "sequences batch() decodes at once on llama.cpp (1: one at a time)",
                  low=1, high=256)   # 16: on a CPU the step time grows slowly up to about there


@dataclass
class Seq:
    """One request of the batch: its prompt, its sampler, and the deltas it has made."""
    ids: list
    s: object             # its Sampling (with the seed it uses)
    max_new: int
    grammar: object = None
    deltas: list = field(default_factory=list)
    error: Exception | None = None
    slot: int = -1        # llama.cpp's sequence id while it runs
    fed: int = 0          # prompt tokens in the cache so far
    pos: int = 0          # the next position
    pending: int | None = None   # the last token drawn, not yet in the cache
    row: int = -1         # its logits row in the last batch (-1: none)
    n: int = 0            # tokens made


class Batch:
    """The batch context of one loaded model: made at the first batch, kept until unload."""

    def __init__(self, eng, parallel: int):
        import llama_cpp as C

        params = C.llama_context_params.from_buffer_copy(eng.llm.context_params)
        params.n_seq_max, params.kv_unified, params.embeddings = parallel, True, False
        self.ctx = C.llama_init_from_model(eng.llm._model.model, params)
        if not self.ctx:
            raise VllamaError(f"llama.cpp could not make a context for {parallel} sequences at once "
                              "(memory?): batch runs in turn after loading with a smaller n_ctx")
        self.C, self.parallel, self.n_batch = C, parallel, params.n_batch
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self.mem = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(self.n_batch, 0, 1)
        self.vocab = eng.llm.n_vocab()

    def close(self) -> None:
        if self.ctx:
            self.C.llama_batch_free(self.batch)
            self.C.llama_free(self.ctx)
            self.ctx = None

    __del__ = close

    def row(self, i: int):
        import numpy as np

        return np.ctypeslib.as_array(self.C.llama_get_logits_ith(self.ctx, i), shape=(self.vocab,))

    def steps(self, eng, seqs: list[Seq]):
        """Run every sequence to its end; yields after each llama_decode (an interrupt stops there)."""
        self.C.llama_memory_clear(self.mem, True)
        waiting, running = list(seqs), []
        free, reserved = list(range(self.parallel)), 0
        tools = {}
        self.peak = 0   # the most sequences that ran at once
        try:
            while waiting or running:
                # a sequence joins when a slot is free and the cache has room for its prompt and max_tokens
                while waiting and free and reserved + len(waiting[0].ids) + waiting[0].max_new <= self.n_ctx:
                    q = waiting.pop(0)
                    q.slot = free.pop(0)
                    reserved += len(q.ids) + q.max_new
                    tools[q.slot] = _Tools(eng, self, q)
                    running.append(q)
                self.peak = max(self.peak, len(running))
                entries = self._fill(running)
                self._decode(entries)
                for q in list(running):
                    if q.row < 0:
                        continue
                    if tools[q.slot].take(q):
                        running.remove(q)
                        self.C.llama_memory_seq_rm(self.mem, q.slot, -1, -1)
                        free.append(q.slot)
                        reserved -= len(q.ids) + q.max_new
                        tools.pop(q.slot).close()
                yield
        finally:
            for t in tools.values():
                t.close()
            self.C.llama_memory_clear(self.mem, True)

    def _fill(self, running: list[Seq]) -> list[tuple]:
        """The next batch: each running sequence's drawn token, then prompt pieces in the room left."""
        entries = []
        for q in running:
            q.row = -1
            if q.pending is not None:
                entries.append((q.pending, q.pos, q, True))
                q.pos += 1
        for q in running:
            room = self.n_batch - len(entries)
            if q.fed < len(q.ids) and room > 0:
                piece = q.ids[q.fed:q.fed + room]
                q.fed += len(piece)
                last = q.fed == len(q.ids)
                entries += [(tok, q.pos + i, q, last and i == len(piece) - 1) for i, tok in enumerate(piece)]
                q.pos += len(piece)
        return entries

    def _decode(self, entries: list[tuple]) -> None:
        b = self.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, q, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = q.slot
            if logits:
                q.row = i
        rc = self.C.llama_decode(self.ctx, b)
        if rc != 0:
            raise VllamaError(f"llama.cpp could not decode the batch (code {rc}): run fewer prompts at once")


class _Tools:
    """A running sequence's sampler, detokenizer and stops; tokens are held until they make text,
    as the one-sequence loop (llamacpp_loop.token_loop) holds them."""

    def __init__(self, eng, batch: Batch, q: Seq):
        import numpy as np

        s = q.s
        self.chain = Chain(eng, s, q.grammar, row=batch.row)
        self.greedy = s.temperature == 0 and q.grammar is None and plain(s)
        self.batch, self.np, self.ctx = batch, np, _Ctx(batch.ctx)
        self.detok = Detokenizer(eng.llm, eng._pieces)
        self.stops = StopMatcher(s.stop)
        self.cut = self.stops.feed if s.stop else (lambda text: (text, False))
        self.eog = None if s.ignore_eos else eng._is_eog
        self.logprobs = s.logprobs
        self.text = (lambda tok: piece_text(eng, tok))
        self.work = np.empty(batch.vocab, np.float32) if s.logprobs is not None else None
        self.held: list[int] = []
        self.scored: list[TokenLogprob] = []
        self.lp = None

    def take(self, q: Seq) -> bool:
        """Draw q's next token from its row; True when q has ended."""
        row = q.row
        tok = int(self.np.argmax(self.batch.row(row))) if self.greedy else self.chain.sample(self.ctx, row)
        now = time.perf_counter()
        if self.eog is not None and self.eog(tok):
            q.deltas.append(Delta(self.detok.flush() + self.stops.flush(), tuple(self.held), now, "stop", logprobs=self.lp))
            return True
        q.n += 1
        self.held.append(tok)
        if self.logprobs is not None:
            self.scored.append(self._score(row, tok))
            self.lp = tuple(self.scored)
        text, hit = self.cut(self.detok.feed(tok))
        if hit or q.n >= q.max_new:
            if not hit:
                text += self.cut(self.detok.flush())[0] + self.stops.flush()
            q.deltas.append(Delta(text, tuple(self.held), now, "stop" if hit else "length", logprobs=self.lp))
            return True
        if text:
            q.deltas.append(Delta(text, tuple(self.held), now, logprobs=self.lp))
            self.held = []
            if self.logprobs is not None:
                self.scored, self.lp = [], ()
        q.pending = tok
        return False

    def _score(self, row: int, tok: int) -> TokenLogprob:
        logits = self.batch.row(row)
        lse, best = log_softmax_top(logits, min(self.logprobs, self.batch.vocab), self.work)
        top = tuple((self.text(int(i)), float(logits[i]) - lse) for i in best)
        return TokenLogprob(self.text(tok), float(logits[tok]) - lse, top, tok)

    def close(self) -> None:
        self.chain.close()


class _Ctx:
    """What Chain.sample reads of a context: the raw pointer as `.ctx`."""

    def __init__(self, ctx):
        self.ctx = ctx
