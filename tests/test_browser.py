"""A real JupyterLab on 127.0.0.1 (token auth) in headless Chromium: the panel streams and stops,
and a %%vllama cell streams into its output. Screenshots go to out/screenshots/."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from vllama_jupyter.servers import free_port

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parent.parent / "out" / "screenshots"
TOKEN = "vllama-browser-test-token"

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (scripts/test.sh installs it with apt-get when run as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%load_ext vllama_jupyter\n%vllama load embedded --n-ctx 16384"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "import vllama_jupyter as v\np = v.panel()\np.max_tokens.value = 16000\np.temperature.value = 0\np"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%%vllama -t 0 --max-tokens 16000 --ignore-eos -o r\nROMEO:\n"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


EXT_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%load_ext vllama_jupyter\n%vllama load embedded --n-ctx 16384\n%config VllamaMagics.max_tokens = 16000\n%config VllamaMagics.temperature = 0.0"},
    ],
    "metadata": NOTEBOOK["metadata"], "nbformat": 4, "nbformat_minor": 5,
}


TOKENS_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%load_ext vllama_jupyter\n%vllama load embedded"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%%vllama -t 0.8 --seed 11 --max-tokens 60 --ignore-eos -f tokens -o r\nROMEO:\n"},
    ],
    "metadata": NOTEBOOK["metadata"], "nbformat": 4, "nbformat_minor": 5,
}


THINK = r'root ::= "<think>\n" [a-z]{2,6} (" " [a-z]{2,6}){60,80} "\n</think>\n\n" [A-Z] [a-z]{2,8} (" " [a-z]{2,8}){30,40} "."'


def think_notebook() -> dict:
    """A Qwen3-templated test model whose thinking is forced by a grammar (a long thought, then the answer)."""
    from benchmarks.models import chat_model

    return {"cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": f"%load_ext vllama_jupyter\n%vllama load {chat_model('Qwen-Qwen3-0.6B')}\nG = {THINK!r}"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%%vllama --chat -t 0 --max-tokens 400 --grammar G -o r\nWho goes there?"},
    ], "metadata": NOTEBOOK["metadata"], "nbformat": 4, "nbformat_minor": 5}


def vision_notebook() -> dict:
    """A tiny vision model built here, a figure, a %%vllama --image cell, and the panel."""
    from benchmarks.models import vision_model

    cell = lambda src: {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": src}  # noqa: E731
    return {"cells": [
        cell(f"%load_ext vllama_jupyter\n%vllama load {vision_model()}\nimport matplotlib.pyplot as plt\n"
             "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([1, 4, 2, 8]);"),
        cell("%%vllama --image fig -t 0 --max-tokens 1500 --ignore-eos -o r\nWhat does this plot show?"),
        cell("import vllama_jupyter as v\np = v.panel()\np.temperature.value = 0\n"
             "p.prompt.value = 'What does this plot show?'\np"),
    ], "metadata": NOTEBOOK["metadata"], "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    (root / "vision.ipynb").write_text(json.dumps(vision_notebook()))
    (root / "think.ipynb").write_text(json.dumps(think_notebook()))
    (root / "browser.ipynb").write_text(json.dumps(NOTEBOOK))
    (root / "ext.ipynb").write_text(json.dumps(EXT_NOTEBOOK))
    (root / "tokens.ipynb").write_text(json.dumps(TOKENS_NOTEBOOK))
    port = free_port()
    log = open(root / "lab.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                             "--ip", "127.0.0.1", "--port", str(port), f"--IdentityProvider.token={TOKEN}",
                             f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{base}/api/status", params={"token": TOKEN}, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def open_notebook(pg, lab, name):
    pg.goto(f"{lab}/lab/tree/{name}?reset&token={TOKEN}")  # reset: only this notebook open
    pg.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    pg.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=120_000)
    time.sleep(2)  # let the notebook settle before typing into it


@pytest.fixture(scope="module")
def page(lab):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.lab = lab
        open_notebook(pg, lab, "browser.ipynb")
        yield pg
        browser.close()


def grows(read, first_min=50, timeout=120):
    """Wait until read() is longer than first_min, then until it grows further (a busy machine may
    pause the kernel for a while); return both lengths."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(read()) <= first_min:
        time.sleep(0.05)
    a = len(read())
    end = time.monotonic() + 30
    while time.monotonic() < end and len(read()) <= a:
        time.sleep(0.1)
    return a, len(read())


def theme(page, name: str) -> None:
    """Switch JupyterLab to its Light or Dark theme from the command palette."""
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.keyboard.type(f"Use Theme: JupyterLab {name}")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{str(name == 'Light').lower()}'", timeout=30_000)
    time.sleep(1)


def luminance(color: str) -> int:
    return sum(int(x) for x in color[color.index("(") + 1:color.index(")")].split(",")[:3])


def test_panel_generate_streams_and_stop(page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    page.locator(".jp-Cell").nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".jp-Cell:nth-child(1) .jp-InputPrompt:has-text('[1]')", timeout=120_000)
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".vllama-panel button:has-text('Generate')", timeout=120_000)
    page.wait_for_function("document.querySelector('.vllama-panel') && "
                           "document.querySelector('.vllama-panel').innerText.includes('tiny-shakespeare')",
                           timeout=120_000)
    # the picked model's plan shows before a load: its size, the verdict and the largest context
    assert "free RAM: fits; the largest context that fits is" in page.locator(".vllama-panel").inner_text()
    page.locator(".vllama-panel button:has-text('Generate')").click()
    output = page.locator(".vllama-output textarea")
    a, b = grows(output.input_value)
    assert a > 50 and b > a, (a, b)
    page.locator(".vllama-panel button:has-text('Stop')").click()
    page.wait_for_function("document.querySelector('.vllama-panel').innerText.includes('cancelled')", timeout=60_000)
    stopped = len(output.input_value())
    time.sleep(0.5)
    assert len(output.input_value()) == stopped  # nothing more after Stop
    page.screenshot(path=str(SHOTS / "panel.png"), full_page=True)
    page.locator(".vllama-panel").screenshot(path=str(SHOTS / "panel-widget.png"))   # docs/panel.png
    print(f"panel browser test: {time.monotonic() - t0:.1f} s")


def test_vllama_cell_streams_into_its_output(page):
    t0 = time.monotonic()
    page.locator(".jp-Cell").nth(2).click()
    page.keyboard.press("Shift+Enter")
    out = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output").first
    a, b = grows(lambda: out.inner_text() if out.count() else "")
    assert a > 50 and b > a, (a, b)
    page.screenshot(path=str(SHOTS / "cell.png"), full_page=True)
    page.keyboard.press("Escape")
    page.keyboard.press("i")
    page.keyboard.press("i")  # interrupt the kernel
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[2].innerText.includes('interrupted')", timeout=60_000)
    print(f"cell browser test: {time.monotonic() - t0:.1f} s")


def test_status_bar_insert_cell_and_stop_generation(page):
    """The JupyterLab extension: status bar, "Insert %%vllama cell", "Stop generation"."""
    t0 = time.monotonic()
    open_notebook(page, page.lab, "ext.ipynb")
    status = page.locator(".vllama-status")
    assert not status.is_visible()  # hidden until the kernel has loaded the extension
    page.locator(".jp-Cell").nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")  # run in place: no new cell below
    page.wait_for_selector(".vllama-status:has-text('llamacpp · tiny-shakespeare · idle')", timeout=120_000)
    page.screenshot(path=str(SHOTS / "statusbar-loaded.png"))
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.keyboard.type("Insert %%vllama cell")
    page.keyboard.press("Enter")
    cell = page.locator(".jp-Cell").nth(1)
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[1] && "
                           "document.querySelectorAll('.jp-Cell')[1].innerText.includes('%%vllama')", timeout=30_000)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("ROMEO:")
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[1].innerText.includes('ROMEO:')", timeout=30_000)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".vllama-status[data-state='generating']", timeout=60_000)
    out = cell.locator(".jp-OutputArea-output").first
    a, b = grows(lambda: out.inner_text() if out.count() else "")
    assert b > a > 50
    page.screenshot(path=str(SHOTS / "statusbar-generating.png"))
    page.locator("jp-button:has-text('Stop generation'), button:has-text('Stop generation')").first.click()
    page.wait_for_selector(".vllama-status[data-state='idle']:has-text('tok/s')", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[1].innerText.includes('interrupted')", timeout=60_000)
    # the %%vllama cell's body is highlighted as Markdown, not Python
    assert cell.locator(".cm-content").get_attribute("data-language") == "markdown"
    page.screenshot(path=str(SHOTS / "statusbar-stopped.png"))
    print(f"extension browser test: {time.monotonic() - t0:.1f} s; status: {status.inner_text()}")


def test_tokens_view_in_light_and_dark_themes(page):
    """`-f tokens`: one shaded span per token, alternatives on hover, readable in both themes."""
    open_notebook(page, page.lab, "tokens.ipynb")
    page.locator(".jp-Cell").nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    spans = page.locator(".jp-Cell").nth(1).locator(".vllama-tokens span")
    # the stats line comes after the final render (the key line under the tokens shows while streaming too)
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[1].innerText.includes('TTFT')", timeout=120_000)
    assert spans.count() == 60
    tips = [spans.nth(i).get_attribute("title") for i in range(spans.count())]
    assert all("p=" in t and "logprob=" in t for t in tips)
    assert sum(t.count("\n") for t in tips) == 5 * 60   # five alternatives under each token
    shaded = [spans.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(spans.count())]
    assert len(set(shaded)) > 5   # the shade follows the probability
    spans.nth(3).hover()
    page.screenshot(path=str(SHOTS / "tokens-light.png"))
    light = spans.nth(3).evaluate("e => getComputedStyle(e).color")
    theme(page, "Dark")
    dark = spans.nth(3).evaluate("e => getComputedStyle(e).color")
    page.screenshot(path=str(SHOTS / "tokens-dark.png"))
    # the text takes the theme's colour: dark on light, light on dark
    assert luminance(light) < 300 < luminance(dark), (light, dark)
    theme(page, "Light")


def test_thinking_block_folds_when_the_answer_starts(page):
    """The thinking streams into an open, dimmed block that folds once the answer starts, and reads
    in the light and the dark theme."""
    open_notebook(page, page.lab, "think.ipynb")
    page.locator(".jp-Cell").nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".jp-Cell:nth-child(1) .jp-InputPrompt:has-text('[1]')", timeout=120_000)
    page.keyboard.press("Shift+Enter")
    cell = page.locator(".jp-Cell").nth(1)
    cell.locator("details.vllama-thinking[open]").wait_for(timeout=120_000)   # open while it thinks
    page.screenshot(path=str(SHOTS / "thinking-open.png"))
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[1].innerText.includes('thinking,')", timeout=120_000)
    block = cell.locator("details.vllama-thinking")
    assert block.count() == 1 and block.get_attribute("open") is None   # folded after the answer started
    assert cell.locator("summary").inner_text().strip() == "Thinking"
    answer = cell.locator(".jp-OutputArea-output").first.inner_text()
    assert answer.strip() and "<think>" not in answer
    cell.locator("summary").click()
    thought = block.locator("div")
    assert len(thought.inner_text().split()) > 40
    page.screenshot(path=str(SHOTS / "thinking-light.png"))
    light = thought.evaluate("e => getComputedStyle(e).color")
    theme(page, "Dark")
    dark = thought.evaluate("e => getComputedStyle(e).color")
    assert float(thought.evaluate("e => getComputedStyle(e).opacity")) < 1   # dimmed
    page.screenshot(path=str(SHOTS / "thinking-dark.png"))
    assert luminance(light) < 300 < luminance(dark), (light, dark)   # the theme's own text colour
    theme(page, "Light")


def test_image_cell_and_the_panels_image_picker(page, tmp_path):
    """A figure from the cell above goes in with --image and the answer streams; the panel takes an
    image by variable name or by file, shows its thumbnail and generates with it; no label is cut."""
    import numpy as np
    from PIL import Image

    open_notebook(page, page.lab, "vision.ipynb")
    page.locator(".jp-Cell").nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".jp-Cell:nth-child(1) .jp-InputPrompt:has-text('[1]')", timeout=120_000)
    page.keyboard.press("Shift+Enter")
    out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").first
    a, b = grows(lambda: out.inner_text() if out.count() else "")
    assert a > 50 and b > a, (a, b)
    page.wait_for_function("document.querySelectorAll('.jp-Cell')[1].innerText.includes('1 image (16 tokens, sha256 ')",
                           timeout=120_000)
    page.screenshot(path=str(SHOTS / "vision-cell.png"), full_page=True)
    page.locator(".jp-Cell").nth(2).click()
    page.keyboard.press("Shift+Enter")
    panel = page.locator(".vllama-panel")
    panel.locator("button:has-text('Generate')").wait_for(timeout=120_000)
    # every label shows whole: none is cut with an ellipsis
    cut = panel.evaluate("p => [...p.querySelectorAll('.widget-label, .widget-label-basic, label')]"
                         ".filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)")
    assert cut == [], cut
    thumb = panel.locator(".widget-image")
    name = panel.locator("input[placeholder^='or a variable']")
    name.fill("fig")
    name.press("Enter")
    page.wait_for_function("(() => { const i = document.querySelector('.vllama-panel .widget-image');"
                           " return i && i.naturalWidth > 0 && i.offsetParent; })()", timeout=60_000)
    panel.locator("button:has-text('Generate')").click()
    page.wait_for_function("document.querySelector('.vllama-panel').innerText.includes('1 image (16 tokens, sha256 ')",
                           timeout=120_000)
    page.screenshot(path=str(SHOTS / "vision-panel.png"), full_page=True)
    # a file through the upload button replaces it
    path = tmp_path / "square.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(path)
    first = thumb.evaluate("i => i.src")
    with page.expect_file_chooser() as chooser:
        panel.locator("button:has-text('Image file')").click()
    chooser.value.set_files(str(path))
    page.wait_for_function(f"document.querySelector('.vllama-panel .widget-image').src !== {json.dumps(first)}",
                           timeout=60_000)
    assert thumb.evaluate("i => i.naturalWidth") == 60
    page.screenshot(path=str(SHOTS / "vision-upload.png"), full_page=True)
