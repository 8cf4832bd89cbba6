"""Images into vision models: what a notebook holds becomes the model's input (images.py), on
llama.cpp through mtmd with a tiny random-weight LLaVA-shaped projector built here
(benchmarks.models.vision_model), through a real kernel with a matplotlib figure from the cell
above, and through a real llama.cpp server started with the projector. With random weights the
text is noise, but the image's effect is not: image A and image B give different greedy output,
the same image the same output."""
import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

import vllama_jupyter as v
from benchmarks.models import VISION, chat_model, vision_model
from vllama_jupyter.bench.kernel import stream_text
from vllama_jupyter.gate import NO_PROJECTOR
from vllama_jupyter.images import as_image
from vllama_jupyter.session import get_session

from .helpers import failed_line

TOKENS_PER_IMAGE = (VISION["image"] // VISION["patch"]) ** 2
GREEDY = dict(temperature=0, max_tokens=12, ignore_eos=True)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def picture(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# -- images.py: what becomes an image, and one line for what cannot ------------------------------
def test_every_kind_of_notebook_image_becomes_the_same_png(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = picture(0)
    path = tmp_path / "a.png"
    path.write_bytes(png(a))
    ref = as_image(a)
    assert (ref.width, ref.height, ref.mode) == (32, 32, "RGB") and len(ref.sha256) == 64
    same = [PILImage.fromarray(a), png(a), str(path), path, ref.data_url(), a.astype(np.float64) / 255]
    assert {as_image(x).sha256 for x in same} == {ref.sha256}
    assert ref.record() == {"sha256": ref.sha256, "width": 32, "height": 32, "mode": "RGB"}
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    from_fig, from_ax = as_image(fig), as_image(ax)
    assert (from_fig.width, from_fig.height) == (200, 150) and from_fig.sha256 == from_ax.sha256
    plt.close(fig)
    assert from_fig.mode == "RGB" and capsys.readouterr().err == ""   # opaque: converted without a word
    from IPython.display import Image as IPyImage
    assert as_image(IPyImage(data=png(a))).sha256 == ref.sha256


@pytest.mark.parametrize("mode,said", [("RGBA", "transparency (RGBA)"), ("CMYK", "is CMYK"), ("L", "is L"),
                                       ("P", "is P")])
def test_other_modes_are_converted_and_said(mode, said, capsys):
    img = PILImage.fromarray(picture(1)).convert(mode)
    if mode == "RGBA":
        img.putalpha(128)
    out = as_image(img)
    assert out.mode == mode and out.pil().mode == "RGB"
    err = capsys.readouterr().err
    assert said in err and "RGB" in err and err.count("\n") == 1


@pytest.mark.parametrize("bad,line", [
    (b"", "is empty (0 bytes)"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "could not be read as an image"),
    (b"not an image at all", "could not be read as an image"),
    (png(picture(0))[:60], "could not be read as an image"),
    (PILImage.new("RGB", (0, 0)), "is 0×0 pixels: it is empty"),
    (np.zeros((0, 5, 3), np.uint8), "it is empty"),
    (np.zeros((4, 4, 2), np.uint8), "shape (4, 4, 2): an image is H×W"),
    (np.zeros((4,), np.uint8), "shape (4,)"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape (2, 4, 4, 3)"),
    (np.zeros((4, 4, 3), np.int64), "an array of int64: give uint8"),
    (np.zeros((4, 4, 3), bool), "an array of bool"),
    (np.full((4, 4, 3), 2.0), "values outside [0, 1]"),
    (np.full((4, 4, 3), np.nan), "values outside [0, 1] (or NaN)"),
    (np.zeros((20000, 20000), np.uint8), "is 20000×20000 pixels, more than the 50 megapixels"),
    ({"url": "x"}, "is a dict: give a matplotlib figure"),
    (42, "is a int"),
    ("/no/such/file.png", "no image file at '/no/such/file.png'"),
    ("data:text/plain;base64,aGk=", "not a base64 image"),
    ("data:image/png;base64,@@@", "base64 is broken"),
])
def test_bad_images_get_one_line(bad, line):
    with pytest.raises(v.VllamaError) as e:
        as_image(bad)
    assert line in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_huge_png_is_refused_before_it_is_decoded():
    big = PILImage.new("1", (20000, 20000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(v.VllamaError, match="more than the 50 megapixels vllama takes: shrink it"):
        as_image(buf.getvalue())
    assert PILImage.MAX_IMAGE_PIXELS is not None   # PIL's guard is left as it was, for the user's own code


# -- llama.cpp with a projector ------------------------------------------------------------------
@pytest.fixture
def vl():
    """The vision model on llama.cpp, loaded only when another test left something else."""
    s = get_session()
    if s.engine is None or s.ref is None or str(s.ref.path) != str(vision_model()):
        s.load(str(vision_model()), "llamacpp")
    return s.engine


def ask(images, prompt="What is in the picture?", **kw):
    return v.generate(prompt, images=images, **{**GREEDY, **kw})


def test_the_projector_beside_the_model_is_found_and_said(vl, capsys):
    assert vl.projector is not None and vl.projector.kind == "mlp"
    assert vl.settings()["mmproj"].endswith("mmproj-random-vl.gguf")
    assert v.status()["images"] == "mmproj-random-vl.gguf (mlp projector)"


def test_image_a_differs_from_b_and_a_repeats(vl):
    a, b = picture(10), picture(11)
    ra, rb, ra2 = ask([a]), ask([b]), ask([a.copy()])
    assert ra.token_ids == ra2.token_ids and (ra.text, ra.reasoning) == (ra2.text, ra2.reasoning)
    assert ra.token_ids != rb.token_ids, "the image did not reach the model"
    assert ra.output_tokens == 12 and ra.finish_reason == "length"
    # the image's tokens are counted as mtmd counts them, the prompt holds them
    assert ra.record["image_tokens"] == [TOKENS_PER_IMAGE]
    text_prompt = vl.chat_prompt([{"role": "user", "content": "What is in the picture?"}])
    assert ra.prompt_tokens == len(vl.tokenize(text_prompt, special=True)) + TOKENS_PER_IMAGE
    assert f"1 image (16 tokens, sha256 {as_image(a).sha256[:8]})" in ra.stats_line()
    rec = ra.record["images"]
    assert rec == [as_image(a).record()] and "png" not in json.dumps(ra.record).lower().replace("mmproj", "")


def test_two_images_in_openai_message_shape_and_streaming(vl):
    a, b = as_image(picture(10)), as_image(picture(11))
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Compare"}, a.part(), b.part()]}]
    st = v.chat(msgs, keep=False, **GREEDY)
    deltas = list(st)
    r = st.result
    assert len(deltas) >= 2 and r.record["image_tokens"] == [TOKENS_PER_IMAGE] * 2
    assert vl.prompt_tokens(msgs) == r.prompt_tokens   # what the context meter counts, images included
    # both images count: a second image changes the first token's log-probability
    twice = [{"role": "user", "content": [{"type": "text", "text": "Compare"}, a.part(), a.part()]}]
    first = lambda m: v.chat(m, keep=False, logprobs=0, **GREEDY).run().logprobs[0].logprob  # noqa: E731
    assert first(twice) != first(msgs) and first(msgs) == first(msgs)
    assert f"2 images (32 tokens, sha256 {a.sha256[:8]}, {b.sha256[:8]})" in r.stats_line()


def test_a_text_prompt_after_images_is_not_served_from_their_cache(vl):
    # image positions never match a later prompt's cached prefix: a text prompt gives what it
    # gives on a fresh engine
    plain = v.generate("What is in the picture?", **GREEDY)
    ask([picture(3)])
    again = v.generate("What is in the picture?", **GREEDY)
    assert again.token_ids == plain.token_ids


def test_chat_history_keeps_the_image_for_the_next_turn(vl):
    s = get_session()
    s.history.clear()
    first = v.chat("Look", images=[picture(4)], **GREEDY).run()
    follow = v.chat("And now?", **GREEDY).run()
    assert follow.record["image_tokens"] == [TOKENS_PER_IMAGE] and first.record["images"] == follow.record["images"]
    s.history.clear()


@pytest.mark.parametrize("images,line", [
    ([b"junk"], "could not be read as an image"),
    ([np.zeros((4, 4, 2), np.uint8)], "an image is H×W"),
    ([], "images= is empty"),
    ("/no/such.png", "no image file at"),
])
def test_bad_images_leave_the_vision_engine_as_it_was(vl, images, line):
    before = ask([picture(10)])
    with pytest.raises(v.VllamaError, match=line):
        ask(images)
    assert get_session().engine is vl and get_session().state == "idle"
    assert ask([picture(10)]).token_ids == before.token_ids


def test_more_images_than_the_context_holds_is_one_line(vl):
    n = vl.context_length() // TOKENS_PER_IMAGE + 1
    with pytest.raises(v.VllamaError, match=r"tokens \(\d+ of them for images\) but the context holds"):
        ask([picture(i) for i in range(n)])


def test_a_web_url_is_refused_by_a_local_engine(vl):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    with pytest.raises(v.VllamaError, match="a local engine fetches nothing"):
        v.chat(msgs, keep=False)


def test_a_text_only_model_refuses_images_in_one_line():
    get_session().load(str(chat_model("Qwen-Qwen3-0.6B")), "llamacpp")
    with pytest.raises(v.VllamaError) as e:
        ask([picture(0)])
    assert str(e.value) == NO_PROJECTOR
    assert v.generate("hi", max_tokens=2).output_tokens >= 1


@pytest.mark.parametrize("mmproj,line", [
    ("/no/such/mmproj.gguf", "mmproj: no file at"),
    (42, "mmproj must be the path of a projector GGUF"),
])
def test_bad_projectors_are_refused_before_anything_is_freed(mmproj, line):
    get_session().load(str(chat_model("Qwen-Qwen3-0.6B")), "llamacpp")
    before = get_session().engine
    with pytest.raises(v.VllamaError, match=line):
        v.load(str(vision_model()), "llamacpp", mmproj=mmproj)
    assert get_session().engine is before


def test_a_projector_for_another_model_is_refused_and_the_engine_stays(tmp_path):
    from benchmarks.models import _write_projector

    get_session().load(str(chat_model("Qwen-Qwen3-0.6B")), "llamacpp")
    other = tmp_path / "mmproj-other.gguf"
    _write_projector(other, 64)   # its images come out 64 wide; this model's embeddings are 128
    with pytest.raises(v.VllamaError, match="could not load the projector mmproj-other.gguf") as e:
        v.load(str(vision_model()), "llamacpp", mmproj=str(other))
    # mtmd checks the widths against the loaded model, so the model before is loaded again
    assert "\n" not in str(e.value) and str(get_session().ref.path) == str(chat_model("Qwen-Qwen3-0.6B"))
    assert v.generate("hi", max_tokens=2).output_tokens >= 1


def test_a_model_file_as_projector_is_refused():
    with pytest.raises(v.VllamaError, match="is not a vision projector"):
        v.load(str(vision_model()), "llamacpp", mmproj=str(chat_model("Qwen-Qwen3-0.6B")))


# -- a real kernel: the figure made in the cell above ----------------------------------------------
@pytest.fixture(scope="module")
def k(kernel):
    kernel.execute(f"import vllama_jupyter as v\nv.load({str(vision_model())!r}, 'llamacpp')\n"
                   "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n")
    return kernel


def test_a_figure_from_the_cell_above_reaches_the_model(k):
    k.execute("fig, ax = plt.subplots(figsize=(1, 1))\nax.plot([0, 1, 2], [2, 0, 1])\n"
              "other, ax2 = plt.subplots(figsize=(1, 1))\nax2.bar([0, 1], [1, 3])\n")
    runs = {}
    for name in ("fig", "other", "fig"):
        msgs = k.execute(f"%%vllama -t 0 --max-tokens 8 --ignore-eos --image {name} -o r\nWhat does the plot show?")
        assert msgs.status == "ok", stream_text(msgs, "stderr")
        out = stream_text(msgs, "stdout")   # the stats line
        assert "1 image (16 tokens, sha256 " in out, out
        seen = k.execute("from vllama_jupyter.images import as_image\n"
                         f"print(r.record['images'][0]['sha256'] == as_image({name}).sha256, r.token_ids)")
        same, ids = stream_text(seen, "stdout").split(" ", 1)
        assert same == "True"
        runs.setdefault(name, []).append(ids)
    assert runs["fig"][0] == runs["fig"][1] and runs["fig"][0] != runs["other"][0]


def test_bad_image_cells_fail_with_one_line_and_the_kernel_goes_on(k):
    k.execute("junk = b'nope'\narr = __import__('numpy').zeros((3, 3, 7))\n"
              "fig, ax = plt.subplots(figsize=(1, 1))\nax.plot([0, 1, 2], [2, 0, 1])")   # its own figure
    for flag, line in (("nothing_here", "names no variable here and no file"),
                       ("junk", "could not be read as an image"),
                       ("arr", "an image is H×W"),
                       ("Out[999]", "cell 999 has no output")):
        shown = failed_line(k.execute(f"%%vllama --image {flag}\nWhat is it?"))
        assert line in shown, shown
    assert k.execute("%%vllama -t 0 --max-tokens 4 --image fig\nAgain?").status == "ok"


# -- a real llama.cpp server with the projector ------------------------------------------------------
@pytest.fixture(scope="module")
def vl_server():
    from vllama_jupyter.servers import make

    server = make("llamacpp", str(vision_model())).start()
    yield server
    server.stop()


def test_images_through_a_real_llamacpp_server(vl_server):
    from vllama_jupyter.engines.openai import Engine

    remote = Engine.connect(url=vl_server.url, preset="llamacpp-server")
    try:
        a, b = as_image(picture(10)), as_image(picture(11))
        ask_remote = lambda img: remote.chat(  # noqa: E731
            [{"role": "user", "content": [img.part(), {"type": "text", "text": "What is in the picture?"}]}],
            v.Sampling(temperature=0, max_tokens=12)).run()   # that server takes no ignore_eos
        ra, rb, ra2 = ask_remote(a), ask_remote(b), ask_remote(a)
        seen = lambda r: r.reasoning + r.text  # noqa: E731  (Qwen3.5's template opens a thought)
        assert seen(ra) == seen(ra2) and seen(ra) != seen(rb)
        assert ra.output_tokens == 12 and ra.record["images"] == [a.record()]
        with pytest.raises(v.VllamaError, match="could not be read as an image"):
            remote.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                                      {"type": "text", "text": "hi"}]}])
    finally:
        remote.close()


def test_a_text_only_server_refusing_an_image_is_one_line_with_the_fix():
    from vllama_jupyter.engines.openai import Engine
    from vllama_jupyter.servers import make

    server = make("llamacpp", str(chat_model("Qwen-Qwen3-0.6B"))).start()
    remote = Engine.connect(url=server.url, preset="llamacpp-server")
    try:
        with pytest.raises(v.VllamaError) as e:
            remote.chat([{"role": "user", "content": [as_image(picture(1)).part(), {"type": "text", "text": "hi"}]}],
                        v.Sampling(max_tokens=4)).run()
        line = str(e.value)
        assert "refused the image" in line and "--mmproj" in line and "\n" not in line, line
    finally:
        remote.close()
        server.stop()


# -- the shared engine: the `openai` client sends images ---------------------------------------------
def test_the_openai_client_sends_images_to_a_shared_vision_engine(vl, tmp_path, monkeypatch):
    from openai import OpenAI

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    info = v.share()
    try:
        token = json.loads(open(info["file"]).read())["token"]
        client = OpenAI(base_url=info["url"], api_key=token)

        def seen(img, **kw):
            r = client.chat.completions.create(
                model=info["model"], temperature=0, max_tokens=12, extra_body={"ignore_eos": True},
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": as_image(img).data_url()}},
                    {"type": "text", "text": "What is in the picture?"}]}], **kw)
            return r
        a, b = seen(picture(10)), seen(picture(11))
        msg = lambda r: (r.choices[0].message.content or "") + (getattr(r.choices[0].message, "reasoning_content", None) or "")  # noqa: E731
        assert msg(a) == msg(seen(picture(10))) and msg(a) != msg(b)
        local = ask([picture(10)])
        assert msg(a) == local.reasoning + local.text
        assert a.usage.prompt_tokens == local.prompt_tokens   # the image's tokens are counted
        with pytest.raises(Exception, match="could not be read as an image"):
            client.chat.completions.create(model=info["model"], max_tokens=2, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "hi"}]}])
        assert seen(picture(10)).choices[0].message == a.choices[0].message   # the engine is as it was
    finally:
        v.stop_sharing()


# -- where the projector comes from ---------------------------------------------------------------------
def test_a_folder_or_hub_repo_with_a_projector_loads_the_model_and_finds_the_projector(tmp_path):
    """The projector is never taken for the model; in a Hugging Face cache (offline, as huggingface_hub
    lays it out) the one beside the model is found, full precision first."""
    import shutil

    from vllama_jupyter.engines.vision import find_projector
    from vllama_jupyter.models import list_models, resolve

    from .conftest import run_python

    folder = vision_model().parent
    assert resolve(str(folder), "llamacpp").path.name == "random-vl.gguf"
    assert [r["model"] for r in list_models([str(folder)])][1:] == [str(folder / "random-vl.gguf")]
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = tmp_path / "hub" / "models--acme--vl-GGUF"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    shutil.copy(folder / "random-vl.gguf", snap / "vl-Q4_K_M.gguf")
    for name in ("mmproj-vl-Q8_0.gguf", "mmproj-vl-f16.gguf"):
        shutil.copy(folder / "mmproj-random-vl.gguf", snap / name)
    assert find_projector(snap / "vl-Q4_K_M.gguf", None).name == "mmproj-vl-f16.gguf"
    r = run_python("import json, vllama_jupyter as v\n"
                   "st = v.load('acme/vl-GGUF', 'llamacpp')\n"
                   "import numpy as np\n"
                   "r = v.generate('hi', images=[np.zeros((32, 32, 3), np.uint8)], max_tokens=3)\n"
                   "print(json.dumps([st['path'].rsplit('/', 1)[1], st['images'], r.record['image_tokens']]))",
                   env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == \
        ["vl-Q4_K_M.gguf", "mmproj-vl-f16.gguf (mlp projector)", [TOKENS_PER_IMAGE]]
