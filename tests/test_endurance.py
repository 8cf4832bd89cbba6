"""A real kernel used for a long time: interrupts, many generations and many load/unload cycles
leave its memory where it was."""
import threading
import time

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
    k.execute("%vllama load embedded")
    cell = "%%vllama -t 0.8 --max-tokens 32 --quiet\nROMEO:\n"
    for _ in range(20):
        k.execute(cell)
    before = rss(k)
    t0 = time.perf_counter()
    statuses = [k.execute(cell).status for _ in range(500)]
    after = rss(k)
    print(f"500 generations in {time.perf_counter() - t0:.0f} s: RSS {before / 2**20:.1f} -> "
          f"{after / 2**20:.1f} MiB ({after / before - 1:+.2%})")
    assert statuses == ["ok"] * 500
    assert after <= before * 1.02


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
