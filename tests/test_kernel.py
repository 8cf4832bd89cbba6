"""%%vllama in a real IPython kernel (jupyter_client): throttled display updates, interrupt."""
import threading
import time


from vllama_jupyter.bench.kernel import of_type, stream_text

from .helpers import failed_line


def test_cell_streams_throttled_updates_and_final_text_matches(kernel):
    kernel.execute("%vllama load embedded --n-ctx 4200")
    msgs = kernel.execute("%%vllama -t 0 --max-tokens 4000 --ignore-eos -o r\nROMEO:\n")
    assert not of_type(msgs, "error"), msgs
    displays = of_type(msgs, "display_data")
    updates = of_type(msgs, "update_display_data")
    assert len(displays) == 1 and len(updates) >= 3
    ids = {m["content"]["transient"]["display_id"] for m in displays + updates}
    assert len(ids) == 1  # one display handle per cell
    final = updates[-1]["content"]["data"]["text/plain"]
    assert final == kernel.value("r.text") and len(final) > 100
    assert kernel.value("r.output_tokens") == 4000
    live = updates[:-1]
    # the kernel's own send times: a test process that stalls for a moment would see a burst
    span = (live[-1]["header"]["date"] - live[0]["header"]["date"]).total_seconds() if len(live) > 1 else 1.0
    assert (len(live) - 1) / span <= 20.0, f"{len(live)} updates in {span:.2f}s"
    stats = stream_text(msgs)
    assert "4000 tokens" in stats and "tokens/s" in stats and "TTFT" in stats


def test_interrupt_keeps_partial_text_and_engine(kernel):
    kernel.execute("%vllama load embedded --n-ctx 16384")
    engine_id = kernel.value("id(__import__('vllama_jupyter').session.get_session().engine)")
    first_update = threading.Event()

    def watch(m):
        if m["msg_type"] == "update_display_data":
            first_update.set()

    def interrupt():
        if first_update.wait(60):
            time.sleep(0.2)
            kernel.km.interrupt_kernel()
    t = threading.Thread(target=interrupt)
    t.start()
    msgs = kernel.execute("%%vllama -t 0 --max-tokens 16000 --ignore-eos -o part\nROMEO:\n", on_msg=watch)
    t.join()
    assert not of_type(msgs, "error"), [m["content"] for m in of_type(msgs, "error")]
    assert kernel.value("part.finish_reason") == "interrupted"
    n = kernel.value("part.output_tokens")
    assert 0 < n < 16000
    shown = of_type(msgs, "update_display_data")[-1]["content"]["data"]["text/plain"]
    assert shown == kernel.value("part.text")
    assert "interrupted" in stream_text(msgs)
    after = kernel.execute("%%vllama -t 0 --max-tokens 5 -o again\nJULIET:\n")
    assert not of_type(after, "error")
    assert kernel.value("again.output_tokens") == 5
    assert kernel.value("id(__import__('vllama_jupyter').session.get_session().engine)") == engine_id


def test_an_unread_stream_does_not_hold_the_engine(kernel):
    kernel.execute("import vllama_jupyter as v\n%vllama load embedded --engine llamacpp")
    msgs = kernel.execute("v.stream('ROMEO:', max_tokens=5)")  # shown as the cell's value, never read
    assert msgs.status == "ok"
    assert "not started" in of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"]
    assert kernel.execute("%%vllama -t 0 --max-tokens 3\nROMEO:\n").status == "ok"
    # a stream that was started holds the engine until it is closed or dropped
    assert kernel.execute("s = v.stream('ROMEO:', max_tokens=50); d = next(s)").status == "ok"
    assert "the engine is busy (generating)" in failed_line(kernel.execute("%%vllama --max-tokens 3\nROMEO:\n"))
    assert kernel.execute("del s").status == "ok"
    assert kernel.execute("%%vllama -t 0 --max-tokens 3\nROMEO:\n").status == "ok"
    assert kernel.execute("s = v.stream('ROMEO:', max_tokens=50); d = next(s); s.close()").status == "ok"
    assert kernel.value("s.result.finish_reason") == "cancelled"
    assert kernel.execute("%vllama unload").status == "ok"


def test_a_stream_that_fails_mid_way_frees_the_engine(kernel):
    from .hostile_server import HostileServer

    with HostileServer() as server:
        for mode, words in (("text-int", "text that is a int"), ("no-done", "the output is truncated")):
            assert kernel.execute(f"%vllama load --engine openai --url {server.url(mode)}").status == "ok"
            assert words in failed_line(kernel.execute("%%vllama\nROMEO:\n"))
            assert kernel.value("__import__('vllama_jupyter').session.get_session().busy") is False
        assert kernel.execute("%vllama unload").status == "ok"
    assert kernel.execute("%vllama load embedded --engine llamacpp").status == "ok"


def test_llama_cpp_log_lines_stay_out_of_cells(kernel):
    msgs = kernel.execute("%vllama load embedded --engine llamacpp --n-ctx 4096")
    err = stream_text(msgs, "stderr")
    assert msgs.status == "ok"
    assert err.strip() == ("vllama: the context (4,096 tokens) is longer than the 1,024 tiny-shakespeare was "
                           "trained on: text past that point may be poor")
    msgs = kernel.execute("%%vllama -t 0 --max-tokens 5\nROMEO:\n")
    assert msgs.status == "ok" and stream_text(msgs, "stderr") == ""
    assert kernel.execute("%vllama load embedded --engine llamacpp").status == "ok"
