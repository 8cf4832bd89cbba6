"""A real kernel used for a long time: interrupts, many generations and many load/unload cycles
leave its memory where it was."""
import threading

import psutil
import pytest

from vllama_jupyter.bench.kernel import of_type

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def k(kernel):
    return kernel


def rss(k) -> int:
    return psutil.Process(k.value("__import__('os').getpid()")).memory_info().rss


def interrupted_cell(k) -> str:
    """Run a long generation, interrupt it once tokens are showing; the finish reason."""
    shown = threading.Event()

    def watch(m):
        if m["msg_type"] == "update_display_data":
            shown.set()

    def interrupt():
        if shown.wait(60):
            k.km.interrupt_kernel()
    t = threading.Thread(target=interrupt)
    t.start()
    msgs = k.execute("%%vllama -t 0 --max-tokens 16000 --ignore-eos --quiet -o part\nROMEO:\n", on_msg=watch)
    t.join()
    assert msgs.status == "ok" and not of_type(msgs, "error")
    return k.value("part.finish_reason")


def test_50_interrupts_keep_memory(k):
    k.execute("%vllama load embedded --n-ctx 16384")
    for _ in range(5):
        interrupted_cell(k)
    before = rss(k)
    reasons = [interrupted_cell(k) for _ in range(50)]
    after = rss(k)
    print(f"50 interrupts: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({after / before - 1:+.2%})")
    assert reasons == ["interrupted"] * 50
    assert after <= before * 1.02
    assert k.execute("%%vllama -t 0 --max-tokens 5 -o ok\nJULIET:\n").status == "ok"
    assert k.value("ok.output_tokens") == 5


def test_500_generations_keep_memory(k):
    """What our code allocates and keeps over 500 cells stays within its bounded caches (each
    token's text and end-of-text flag: tens of KB), and the process's memory levels off. The kernel
    itself keeps every cell's input and message signature (~1.5 KB a cell), so a plain RSS ratio
    would measure IPython's history, not us."""
    k.execute("%vllama load embedded\nimport gc, tracemalloc")
    cell = "%%vllama -t 0.8 --max-tokens 32 --quiet\nROMEO:\n"
    for _ in range(20):
        k.execute(cell)
    k.execute("gc.collect(); tracemalloc.start(); _before = tracemalloc.take_snapshot()")
    samples, statuses = [rss(k)], []
    for _ in range(5):
        statuses += [k.execute(cell).status for _ in range(100)]
        samples.append(rss(k))
    ours = k.value("(gc.collect(), sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(_before, 'filename') "
                   "if '/vllama_jupyter/' in s.traceback[0].filename))[1]")
    k.execute("tracemalloc.stop()")
    print(f"kept by vllama_jupyter's code: {ours / 1024:.1f} KiB; RSS every 100 generations (MiB): "
          + ", ".join(f"{s / 2**20:.1f}" for s in samples))
    assert statuses == ["ok"] * 500
    assert ours < 512 * 1024, f"{ours} bytes kept by vllama_jupyter over 500 cells"
    assert samples[-1] - samples[-3] < 2 * 2**20, "the last 200 generations still added 2 MiB or more"


def test_30_load_unload_cycles_keep_memory(k):
    for _ in range(3):
        k.execute("%vllama load embedded")
        k.execute("%vllama unload")
    before = rss(k)
    for _ in range(30):
        assert k.execute("%vllama load embedded").status == "ok"
        assert k.execute("%%vllama -t 0 --max-tokens 8 --quiet\nROMEO:\n").status == "ok"
        assert k.execute("%vllama unload").status == "ok"
    after = rss(k)
    print(f"30 load/unload cycles: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({after / before - 1:+.2%})")
    assert after <= before * 1.02
