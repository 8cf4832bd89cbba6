"""LoRA adapters on llama.cpp: a PEFT adapter trained here (so that "ROMEO:" goes on with a fixed
phrase) and converted by llama.cpp's own converter, per request and back to the base, in a batch,
in a conversation, in records, through the magics in a real kernel and through the share to the
`openai` client; bad adapters one line each with the engine and its adapters as they were."""
import json
import shutil

import openai
import pytest

from benchmarks.models import chat_model, random_lora
from vllama_jupyter.bench.kernel import Kernel, stream_text
from vllama_jupyter.errors import VllamaError
from vllama_jupyter.models import EMBEDDED_DIR, cache_dir
from vllama_jupyter.sampling import Sampling
from vllama_jupyter.session import Session

from .conftest import run_python
from .helpers import failed_line, succeeded

PHRASE = " the moon is made of green cheese, good sir."
GREEDY = {"temperature": 0, "max_tokens": 10}
TRAIN = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
base, out, text = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(base)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(
    r=8, lora_alpha=16, lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False).input_ids])
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
for step in range(60):
    model(ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()
model.save_pretrained(out)
"""


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory):
    """A PEFT LoRA trained here on the embedded model's HF form (a few seconds on a CPU)."""
    pytest.importorskip("peft")
    out = tmp_path_factory.mktemp("peft") / "cheese"
    code = f"import sys; sys.argv = ['train', {str(EMBEDDED_DIR / 'hf')!r}, {str(out)!r}, {'ROMEO:' + PHRASE!r}]\n" + TRAIN
    r = run_python(code)
    assert r.returncode == 0 and (out / "adapter_config.json").exists(), r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def session(peft_adapter):
    s = Session()
    s.load(None, "llamacpp")
    yield s
    s._shutdown()


def text(s, lora=None, prompt="ROMEO:", **more) -> str:
    return s.generate(prompt, Sampling(**GREEDY, **more), lora=lora).text


def test_a_peft_adapter_teaches_its_phrase_per_request_and_the_base_stays(session, peft_adapter):
    s = session
    for name in [a["name"] for a in s.lora_list()]:   # the module's other tests may have added it
        s.lora_remove(name)
    base = text(s)
    added = s.lora_add(peft_adapter, name="cheese")
    converted = cache_dir() / "lora" / f"{added['sha256']}.gguf"
    assert converted.exists() and added["scale"] == 1.0 and added["source"] == str(peft_adapter)
    taught = text(s, "cheese")
    assert PHRASE.startswith(taught) and taught.startswith(" the moon"), taught
    assert base != taught and not base.startswith(" the moon")
    for lora, want in (("cheese", taught), (None, base), ("cheese", taught), (None, base)):   # switched both ways
        assert text(s, lora) == want
    # the same folder again: the conversion is taken from the cache; at scale 0 it is the base
    mtime = converted.stat().st_mtime_ns
    s.lora_add(peft_adapter, name="off", scale=0.0)
    assert converted.stat().st_mtime_ns == mtime
    assert text(s, "off") == base
    # the record keeps the adapter; its sampling replays the tokens
    r = s.generate("ROMEO:", Sampling(**GREEDY), lora="cheese")
    assert r.record["lora"] == added and r.record["sampling"]["lora"] == "cheese"
    again = s.generate("ROMEO:", Sampling(**{k: v for k, v in r.record["sampling"].items() if v is not None}))
    assert again.token_ids == r.token_ids
    assert "lora" not in s.generate("ROMEO:", Sampling(**GREEDY)).record
    # a batch with the adapter runs in turn, each prompt with it
    assert [x.text for x in s.batch(["ROMEO:", "ROMEO:"], Sampling(**GREEDY), lora="cheese")] == [taught, taught]
    assert [a["name"] for a in s.lora_list()] == ["cheese", "off"]
    assert [a["name"] for a in s.status()["adapters"]] == ["cheese", "off"]
    s.lora_remove("off")
    with pytest.raises(VllamaError) as e:
        text(s, "off")
    assert "lora='off': no adapter of that name (added: cheese)" in str(e.value)


def test_a_conversation_reuses_its_cache_only_with_the_same_adapter(session, peft_adapter):
    s = session
    if "cheese" not in s.engine.lora.added:
        s.lora_add(peft_adapter, name="cheese")
    msgs = [{"role": "user", "content": "ROMEO:"}, {"role": "assistant", "content": " Good morrow."},
            {"role": "user", "content": "JULIET:"}]
    fresh = Session()
    fresh.load(None, "llamacpp")
    try:
        want = fresh.engine.chat(msgs, Sampling(**GREEDY)).run().text
    finally:
        fresh._shutdown()
    eng = s.engine
    eng.chat(msgs, Sampling(**GREEDY, lora="cheese")).run()   # fills the cache with the adapter's keys and values
    assert eng.chat(msgs, Sampling(**GREEDY)).run().text == want


def test_bad_adapters_are_one_line_and_change_nothing(session, tmp_path, peft_adapter):
    s = session
    before, eng = [a["name"] for a in s.lora_list()], s.engine
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(random_lora(EMBEDDED_DIR / "model.gguf").read_bytes()[:4000])
    lost = tmp_path / "lost"
    shutil.copytree(peft_adapter, lost)
    config = json.loads((lost / "adapter_config.json").read_text())
    (lost / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "acme/nowhere"}))
    cases = [((random_lora(chat_model()),), "has incorrect shape (hint: maybe wrong base model?)"),   # another base
             ((cut,), "cut.gguf is not a valid GGUF file"),
             ((tmp_path / "missing",), "no adapter at"),
             ((EMBEDDED_DIR / "model.gguf",), "is a GGUF file but not a LoRA adapter"),
             ((tmp_path,), "has no adapter_config.json"),
             ((peft_adapter, "x", "big"), "an adapter's scale must be a number"),
             ((peft_adapter, "two words"), "an adapter's name is one word"),
             ((peft_adapter, before[0] if before else "cheese"), "is added already"),
             ((None,), "an adapter is the path of a GGUF adapter or a PEFT folder")]
    if not before:
        s.lora_add(peft_adapter, name="cheese")
        before = ["cheese"]
    for args, words in cases:
        with pytest.raises(VllamaError) as e:
            s.lora_add(*args)
        assert words in str(e.value) and "\n" not in str(e.value), (args, str(e.value))
        assert s.engine is eng and [a["name"] for a in s.lora_list()] == before
    for name in ("nope", None, 3):
        with pytest.raises(VllamaError):
            s.lora_remove(name)
    assert text(s, "cheese").startswith(" the moon")
    other = Session()   # a model not from the embedded one, with an adapter whose base is nowhere here
    other.load(str(chat_model()), "llamacpp")
    try:
        with pytest.raises(VllamaError) as e:
            other.lora_add(lost)
        assert "base model 'acme/nowhere' is not a model folder here" in str(e.value)
    finally:
        other._shutdown()


def test_a_load_adds_its_adapters_and_a_bad_one_fails_the_load(peft_adapter, tmp_path):
    s = Session()
    try:
        s.load(None, "llamacpp", lora={"cheese": str(peft_adapter)})
        assert [a["name"] for a in s.lora_list()] == ["cheese"] and text(s, "cheese").startswith(" the moon")
        loaded = s.engine
        with pytest.raises(VllamaError) as e:
            s.load(None, "llamacpp", lora={"bad": str(tmp_path / "missing")})
        assert "no adapter at" in str(e.value) and s.engine is loaded   # refused before anything was freed
        with pytest.raises(VllamaError) as e:
            s.load(None, "llamacpp", lora={"other": str(random_lora(chat_model()))})
        assert "incorrect shape" in str(e.value) and "tiny-shakespeare is loaded again" in str(e.value)
        assert [a["name"] for a in s.lora_list()] == ["cheese"] and text(s, "cheese").startswith(" the moon")
    finally:
        s._shutdown()


def test_the_magics_in_a_real_kernel(peft_adapter):
    k = Kernel()
    try:
        succeeded(k.execute("%load_ext vllama_jupyter\n%vllama load embedded --engine llamacpp"))
        out = stream_text(succeeded(k.execute(f"%vllama lora add {peft_adapter} --name cheese")))
        assert out.startswith("added cheese (scale 1, sha256 ") and "%%vllama --lora cheese" in out
        succeeded(k.execute("%%vllama --lora cheese -t 0 --max-tokens 10 -o r\nROMEO:"))
        assert k.value("r.text").startswith(" the moon is made") and k.value("r.record['lora']['name']") == "cheese"
        assert "LoRA cheese (scale 1)" in stream_text(succeeded(k.execute("%vllama status")))
        assert stream_text(succeeded(k.execute("%vllama lora list"))).startswith(f"cheese: {peft_adapter} (scale 1)")
        assert "lora='nope': no adapter of that name" in failed_line(k.execute("%%vllama --lora nope\nROMEO:"))
        assert "no adapter at" in failed_line(k.execute("%vllama lora add /nowhere/adapter"))
        assert "takes one path" in failed_line(k.execute("%vllama lora add"))
        assert "removed cheese" in stream_text(succeeded(k.execute("%vllama lora remove cheese")))
        assert stream_text(succeeded(k.execute("%vllama lora list"))).strip() == "(no adapter)"
    finally:
        k.stop()


def test_the_share_serves_each_adapter_as_a_model(session, peft_adapter):
    s = session
    if "cheese" not in s.engine.lora.added:
        s.lora_add(peft_adapter, name="cheese")
    info = s.share()
    try:
        client = openai.OpenAI(base_url=info["url"], api_key=s.sharing.token, max_retries=0)
        ids = [m.id for m in client.models.list().data]
        assert ids[0] == info["model"] and "cheese" in ids
        assert client.models.retrieve("cheese").parent == info["model"]
        by_name = client.completions.create(model="cheese", prompt="ROMEO:", **GREEDY).choices[0].text
        base = client.completions.create(model=info["model"], prompt="ROMEO:", **GREEDY).choices[0].text
        assert by_name.startswith(" the moon") and by_name == text(s, "cheese") and base == text(s)
        chat = client.chat.completions.create(model="cheese", messages=[{"role": "user", "content": "ROMEO:"}],
                                              **GREEDY).choices[0].message.content
        assert chat == s.engine.chat([{"role": "user", "content": "ROMEO:"}], Sampling(**GREEDY, lora="cheese")).run().text
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model=info["model"], prompt="ROMEO:", extra_body={"lora": "nope"}, **GREEDY)
        assert "no adapter of that name" in str(e.value)
    finally:
        s.stop_sharing()
