"""Inside a generation on llama.cpp (the in-process engine) and through a real kernel: logprobs,
the token view, token counts and the context meter, records in display metadata, chat context
fitting, embeddings."""
import hashlib
import json

import nbformat
from nbclient import NotebookClient

from vllama_jupyter import Sampling
from vllama_jupyter.bench.kernel import of_type, stream_text
from vllama_jupyter.models import EMBEDDED_DIR

from .insight import check_embed, check_logprobs, check_record_and_replay


def test_logprobs(engine):
    check_logprobs(engine)


def test_record_and_seed_replay(engine):
    rec = check_record_and_replay(engine)
    assert rec["model_sha256"] == hashlib.sha256((EMBEDDED_DIR / "model.gguf").read_bytes()).hexdigest()
    assert rec["context_length"] == 1024 and rec["engine_version"]


def test_a_replayed_conversation_gives_the_same_replies(session):
    def converse(seeds=(None, None)):
        session.history.clear()
        out = []
        for text, seed in zip(("Who goes there?", "And what news?"), seeds):
            r = session.chat(text, max_tokens=24, temperature=0.8, seed=seed).run()
            out.append((r.text, r.record["sampling"]["seed"], r.record["prompt_cache"]))
        return out
    first = converse()
    assert [c for _, _, c in first] == [False, True]   # the follow-up re-uses the first turn's cache
    session.generate("KING HENRY:", max_tokens=8)       # something else in between
    again = converse(tuple(seed for _, seed, _ in first))
    assert again == first


def test_count_tokens_is_the_engines_tokenization(engine, session):
    for text in ["ROMEO:", "What light through yonder window breaks?", "ünïcödé ✓ 名前", "a\n\n b"]:
        assert session.count_tokens(text) == len(engine.tokenize(text))
        assert session.count_tokens(text) == engine.generate(text, Sampling(max_tokens=1)).prompt_tokens


def test_embed(engine):
    check_embed(engine)


def test_stats_line_shows_the_context_share(engine):
    long = engine.generate("ROMEO: " * 300, Sampling(max_tokens=2, temperature=0.0))
    assert long.prompt_tokens > 512 and "of the 1,024-token context" in long.stats_line()
    short = engine.generate("ROMEO:", Sampling(max_tokens=2, temperature=0.0))
    assert "context" not in short.stats_line()


def final_display(msgs) -> dict:
    return (of_type(msgs, "update_display_data") or of_type(msgs, "display_data"))[-1]["content"]


def test_record_in_display_metadata_and_percent_vllama_record(kernel):
    msgs = kernel.execute("%%vllama -t 0.7 --max-tokens 20 -o r\nROMEO:\n")
    assert msgs.status == "ok"
    meta = final_display(msgs)["metadata"]["vllama"]
    assert meta["sampling"]["seed"] == kernel.value("r.record['sampling']['seed']")
    assert meta["output_tokens"] == 20 and len(meta["model_sha256"]) == 64
    shown = kernel.execute("%vllama record")
    assert json.loads(stream_text(shown)) == meta
    # the recorded settings give the same tokens again
    again = kernel.execute(f"%%vllama --seed {meta['sampling']['seed']} -t 0.7 --max-tokens 20 -o r2\nROMEO:\n")
    assert again.status == "ok" and kernel.value("r2.text == r.text")


def test_tokens_format_shades_each_token(kernel):
    msgs = kernel.execute("%%vllama -t 0 --max-tokens 16 -f tokens -o r\nROMEO:\n")
    html = final_display(msgs)["data"]["text/html"]
    assert html.count("<span style='background:") == 16 == kernel.value("len(r.logprobs)")
    assert html.count("title='") == 16 and "perplexity" in html
    assert kernel.value("len(r.logprobs[0].top)") == 5   # -f tokens asks for 5 alternatives


def test_percent_vllama_tokens_line_and_cell(kernel):
    n = kernel.value("__import__('vllama_jupyter').count_tokens('ROMEO: what is it, say')")
    line = stream_text(kernel.execute("%vllama tokens ROMEO: what is it, say"))
    assert line.startswith(f"{n} tokens · ") and "of the 1,024-token context" in line
    kernel.execute("who = 'JULIET'")
    cell = stream_text(kernel.execute("%%vllama tokens\n{who}: what is it?"))
    expected = kernel.value("__import__('vllama_jupyter').count_tokens('JULIET: what is it?\\n')")
    assert cell.startswith(f"{expected} tokens · ")


def test_chat_drops_the_oldest_turns_and_says_so(kernel):
    kernel.execute("%vllama reset")
    turn = "%%vllama --chat -s 'You are Juliet.' -t 0 --max-tokens 60\n" + "ROMEO: " * 70
    notes = []
    for _ in range(6):
        msgs = kernel.execute(turn)
        assert msgs.status == "ok", msgs
        notes.append(stream_text(msgs, "stderr"))
    dropped = [n for n in notes if "oldest turn" in n]
    assert dropped, notes
    assert "vllama: dropped the 1 oldest turn of the conversation to fit the 1,024-token context" in dropped[0]
    hist = kernel.value("[m['role'] for m in __import__('vllama_jupyter').session.get_session().history]")
    assert hist[0] == "system" and hist[-2:] == ["user", "assistant"] and len(hist) < 13


def test_a_saved_notebook_keeps_each_outputs_record(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext vllama_jupyter"),
        nbformat.v4.new_code_cell("%%vllama -t 0.8 --max-tokens 8\nROMEO:"),
    ])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    out = [o for o in saved.cells[1].outputs if o.output_type == "display_data"][-1]
    rec = out.metadata["vllama"]
    assert rec["engine"] == "llamacpp" and isinstance(rec["sampling"]["seed"], int) and rec["output_tokens"] == 8
