"""Several completions at once on llama.cpp: a second context over the loaded model with PARALLEL
sequences in one unified KV cache. Each step is one llama_decode holding the next token of every
running sequence and, in the room left in the batch, the next piece of the prompts of sequences
that joined (llama-server's way: running streams never wait for a whole prompt). Each sequence has
its own sampler chain (seed, grammar, penalties), stops, max_tokens and logprobs; it frees its KV
cells when it ends, and the next one joins in its place.

v.batch runs its prompts this way, beside requests that come while another runs (Live: notebooks
on a share, a share's n choices, a cell beside them). A request alone runs in the one-sequence
loop (prompt cache, speculation); when others come it hands itself over (llamacpp_loop.Handover:
its KV cells and sampler state) and goes on beside them.

On a CPU one step of B sequences costs far less than B steps of one (the weights are read once
per step): Gemma 3 270M Q4_K_M decodes 16 sequences in ~5× one's step time."""
from __future__ import annotations

import ctypes
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import VllamaError
from ..options import Option
from ..result import Delta, TokenLogprob
from ..sampling import StopMatcher
from .llamacpp_loop import Detokenizer, Handover, piece_text
from .llamacpp_sampler import Chain, plain
from .worker import END, HALTED, Raised, read
from .logprobs import log_softmax_top

PARALLEL = Option("parallel", "int", 16, "requests llama.cpp decodes at once (batch(), the share, a cell beside "
                  "them; 1: one at a time)",
                  low=1, high=256)   # 16: on a CPU the step time grows slowly up to about there


@dataclass(eq=False)   # each is itself: kept in sets
class Seq:
    """One request of the batch: its prompt, its sampler, and the deltas it has made."""
    ids: list
    s: object             # its Sampling (with the seed it uses)
    max_new: int
    grammar: object = None
    deltas: list = field(default_factory=list)   # made in this step, not yet sent
    error: Exception | None = None
    slot: int = -1        # llama.cpp's sequence id while it runs
    fed: int = 0          # prompt tokens in the cache so far
    pos: int = 0          # the next position
    pending: int | None = None   # the last token drawn, not yet in the cache
    row: int = -1         # its logits row in the last batch (-1: none)
    n: int = 0            # tokens made
    reserved: int = 0     # KV cells kept for it while it runs
    carried: object = None   # llamacpp_loop.Handover: a request handed over from the one-sequence loop
    out: object = None    # the queue its deltas go to as they come (worker.END at its end)
    cancelled: bool = False   # the reader left: it ends at the next step
    facts: dict = field(default_factory=dict)   # its record's facts: the most sequences it ran beside


def carry_over(h: Handover, s, max_new: int) -> Seq:
    """The Seq that goes on with a request the one-sequence loop handed over."""
    return Seq(h.ids, s, max_new, carried=h, fed=len(h.ids), pos=len(h.ids), pending=h.tok, n=h.n)


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

    def steps(self, eng, more):
        """Run the sequences more(idle) gives to their ends, taking in those that came since the
        last step; yields after each llama_decode. more is told when nothing runs or waits, and
        the steps end when it then gives none."""
        self.C.llama_memory_clear(self.mem, True)
        waiting, running = [], []
        free, reserved = list(range(self.parallel)), 0
        tools = {}

        def end(q: Seq) -> None:
            nonlocal reserved
            running.remove(q)
            self.C.llama_memory_seq_rm(self.mem, q.slot, -1, -1)
            free.append(q.slot)
            reserved -= q.reserved
            tools.pop(q.slot).close()
            q.out.put(END)
        try:
            while True:
                for q in [q for q in running if q.cancelled]:
                    end(q)
                waiting = [q for q in waiting if not q.cancelled]
                waiting += more(not waiting and not running)
                if not waiting and not running:
                    break
                # a sequence joins when a slot is free and the cache has room for its prompt and max_tokens
                while waiting and free and reserved + room(waiting[0]) <= self.n_ctx:
                    q = waiting.pop(0)
                    q.slot, q.reserved = free.pop(0), room(q)
                    reserved += q.reserved
                    if q.carried is not None:
                        self._restore(q)
                    tools[q.slot] = _Tools(eng, self, q)
                    running.append(q)
                entries = self._fill(running)
                self._decode(entries)
                for q in list(running):
                    q.facts["parallel"] = max(q.facts.get("parallel", 0), len(running))
                    if q.row < 0:
                        continue
                    done = tools[q.slot].take(q)
                    for d in q.deltas:   # to its reader as they come
                        q.out.put(d)
                    q.deltas.clear()
                    if done:
                        end(q)
                yield
        finally:
            for t in tools.values():
                t.close()
            self.C.llama_memory_clear(self.mem, True)

    def _restore(self, q: Seq) -> None:
        kv = q.carried.kv
        buf = (ctypes.c_uint8 * len(kv)).from_buffer_copy(kv)
        if self.C.llama_state_seq_set_data(self.ctx, buf, len(kv), q.slot) != len(kv):
            raise VllamaError("llama.cpp could not take a running request into the batch context (memory?): "
                              "load with parallel=1 to run requests in turn")

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


class Route:
    """Where an engine's requests decode: alone in the one-sequence loop, or beside the others in
    the live batch (its context made at the first use). While requests are being taken into the
    batch, a request alone in the loop hands itself over (others_wait)."""

    def __init__(self, eng):
        self.eng = eng
        self.live: Live | None = None
        self.running = 0     # streams running now
        self._count = threading.Lock()
        self._lock = threading.Lock()
        self._arriving = 0   # requests being taken in (the first may wait for the batch context)

    @contextmanager
    def one(self):
        """Count a stream in while the block runs; it gives whether others were running."""
        with self._count:
            self.running += 1
            beside = self.running > 1
        try:
            yield beside
        finally:
            with self._count:
                self.running -= 1

    def join(self, seqs: list[Seq]) -> Live:
        eng = self.eng
        with self._lock:
            if eng._batcher is None:   # before a running request is told to hand itself over
                eng._check_batch_memory()
            fresh = sum(q.carried is None for q in seqs)
            self._arriving += fresh
            try:
                if self.live is None:
                    if eng._batcher is None:
                        eng._batcher = eng._worker.call(lambda: Batch(eng, eng.parallel))
                    self.live = Live(eng, eng._batcher)
                for q in seqs:
                    self.live.add(q)
            finally:
                self._arriving -= fresh
            return self.live

    def source(self, q: Seq):
        """q's deltas, decoded with the other requests running now."""
        yield from self.join([q]).deltas(q)

    def others_wait(self) -> bool:
        live = self.live
        return self._arriving > 0 or (live is not None and live.waiting)


class Live:
    """Requests decoded together in the batch context: a v.batch, and requests that come while
    others run (several notebooks on a share, its n choices, a cell beside them). Each step takes
    in those that came since the last (continuous batching). It runs on the engine's worker while any is running or waiting
    and leaves the worker between bursts, so a request alone keeps the one-sequence loop's speed."""

    def __init__(self, eng, batch: Batch):
        self.eng, self.batch = eng, batch
        self._lock = threading.Lock()
        self._incoming: list[Seq] = []
        self._active: set = set()   # submitted and not yet ended
        self._running = False

    @property
    def waiting(self) -> bool:
        """Requests wait for a place: a request alone in the one-sequence loop hands itself over."""
        return bool(self._incoming)

    def add(self, q: Seq) -> None:
        """Take q in: it decodes beside the other live requests from the next step. A request
        handed over from the one-sequence loop goes first (it came before those waiting)."""
        q.out = queue.SimpleQueue()
        with self._lock:
            self._incoming.insert(0, q) if q.carried is not None else self._incoming.append(q)
            self._active.add(q)
            start, self._running = not self._running, True
        if start:
            self.eng._worker.start(self._run)

    def deltas(self, q: Seq):
        """q's deltas as they come; leaving early cancels it."""
        try:
            yield from read(q.out)
        finally:
            q.cancelled = True
            with self._lock:
                self._active.discard(q)

    def cancel(self, seqs: list[Seq]) -> None:
        """Those of seqs still running or waiting end at the next step."""
        with self._lock:
            for q in seqs:
                q.cancelled = True
                self._active.discard(q)

    def stop(self) -> None:
        """End every live request (a load or unload): their readers get one line."""
        with self._lock:
            for q in self._active:
                q.cancelled = True
                q.out.put(Raised(VllamaError(HALTED)))

    def _more(self, idle: bool) -> list[Seq]:
        with self._lock:
            new, self._incoming = [q for q in self._incoming if not q.cancelled], []
            if idle and not new:
                self._running = False
            return new

    def _run(self) -> None:
        try:
            for _ in self.batch.steps(self.eng, self._more):
                pass
        except BaseException as e:   # every reader gets the error; the next request starts afresh
            with self._lock:
                self._running, self._incoming = False, []
                for q in self._active:
                    q.out.put(Raised(e))


def room(q: Seq) -> int:
    """The KV cells q may still need: what is in its cache and the tokens it may yet make."""
    return len(q.ids) + q.max_new - q.n


class _Tools:
    """A running sequence's sampler, detokenizer and stops; tokens are held until they make text,
    as the one-sequence loop (llamacpp_loop.token_loop) holds them."""

    def __init__(self, eng, batch: Batch, q: Seq):
        import numpy as np

        s, c = q.s, q.carried
        self.greedy = s.temperature == 0 and q.grammar is None and plain(s)
        self.batch, self.np, self.ctx = batch, np, _Ctx(batch.ctx)
        if c is None:
            self.chain = Chain(eng, s, q.grammar, row=batch.row)
            self.detok, self.stops = Detokenizer(eng.llm, eng._pieces), StopMatcher(s.stop)
            self.held, self.scored, self.lp = [], [], None
        else:
            self.chain, self.detok, self.stops = c.chain, c.detok, c.stops
            self.held, self.scored, self.lp = c.held, c.scored, c.lp
            if self.chain.row is not None:
                self.chain.row = batch.row
            q.carried = None   # its KV cells are in the batch now
        self.cut = self.stops.feed if s.stop else (lambda text: (text, False))
        self.eog = None if s.ignore_eos else eng._is_eog
        self.logprobs = s.logprobs
        self.text = (lambda tok: piece_text(eng, tok))
        self.work = np.empty(batch.vocab, np.float32) if s.logprobs is not None else None

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
