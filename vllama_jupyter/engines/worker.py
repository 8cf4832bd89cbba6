"""One OS thread for all llama.cpp compute in the process. ggml runs its work on OpenMP threads
that belong to the thread which started them; a second calling thread (the panel's, a shared
engine's request handler, a second engine's) ran several times slower beside them (4,100 -> 520
tokens/s on 2 cores, the embedded model). So cells, the panel, other notebooks' requests and every
engine hand their work to this one thread: generation as a stream of items through a queue (the
producer never waits for the reader), other calls as one call."""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

from ..errors import VllamaError

END = object()
HALTED = "the engine was unloaded or reloaded: this request was stopped"
BURST_S = 0.002   # a reader whose items came closer than this sleeps this long before the next


class Raised:
    """An error put in a queue of items: read() raises it."""

    def __init__(self, error: BaseException):
        self.error = error


def read(items: queue.SimpleQueue) -> Iterator:
    """The items put in `items` until END (a Raised one raises). Items that come fast are taken a
    few at a time: waking the reader for each one takes a core from llama.cpp's threads on a small
    machine."""
    last = float("-inf")   # the first item is waited for at once
    while True:
        if items.empty() and time.perf_counter() - last < BURST_S:
            time.sleep(BURST_S)
        item = items.get()
        last = time.perf_counter()
        if item is END:
            return
        if isinstance(item, Raised):
            raise item.error
        yield item


class Worker:
    def __init__(self, name: str = "vllama-llamacpp"):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            task()

    def call(self, fn: Callable):
        """fn() on the worker; its result or its exception here."""
        if threading.current_thread() is self._thread:
            return fn()
        box: queue.SimpleQueue = queue.SimpleQueue()

        def task():
            try:
                box.put((True, fn()))
            except BaseException as e:
                box.put((False, e))
        self._tasks.put(task)
        ok, value = box.get()
        if not ok:
            raise value
        return value

    def start(self, fn: Callable[[], None]) -> None:
        """fn() on the worker, not waited for: it handles its own errors."""
        self._tasks.put(fn)

    def iterate(self, make: Callable[[], Iterator], halt: threading.Event | None = None) -> Iterator:
        """The items of the iterator make() gives, produced on the worker. Leaving early (close,
        an interrupt) stops it at its next item and waits until the worker is free again; so
        does `halt` (its engine is closing), and the reader then gets HALTED."""
        items: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()

        def task():
            source = None
            try:
                source = make()
                for item in source:
                    items.put(item)
                    if stop.is_set():
                        break
                    if halt is not None and halt.is_set():
                        items.put(Raised(VllamaError(HALTED)))
                        break
            except BaseException as e:
                items.put(Raised(e))
            finally:
                try:
                    if source is not None and hasattr(source, "close"):
                        source.close()
                finally:
                    items.put(END)
        self._tasks.put(task)
        finished = False
        try:
            yield from read(items)
            finished = True
        finally:
            if not finished:
                stop.set()
                while items.get() is not END:   # the engine is free once the worker is done
                    pass


_shared: Worker | None = None
_lock = threading.Lock()


def shared() -> Worker:
    """The process's llama.cpp thread (started on first use, lives as long as the process)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = Worker()
        return _shared
