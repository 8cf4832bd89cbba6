"""The engine panel: hardware and engine choice, model picker, load/unload, sampling controls,
a prompt, Generate/Stop with the output streaming in, and chat mode with its history."""
from __future__ import annotations

import html
import threading
import time

import ipywidgets as W

from .. import engines
from ..errors import VllamaError
from ..hardware import hardware
from ..labstatus import shared_text
from ..models import EMBEDDED_NAMES, list_models
from ..options import BY_NAME, OPTIONS, is_chat
from ..sampling import Sampling
from ..session import get_session
from ..tokenview import tokens_html


class Panel:
    """`Panel().widget` is the ipywidgets box; `vllama_jupyter.panel()` displays one."""

    def __init__(self, throttle: float = 0.1):
        self.session = get_session()
        self.throttle = throttle
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stream = None
        hw = hardware()

        self.hardware = W.HTML(f"<pre style='margin:0'>{html.escape(hw.summary())}</pre>")
        self.engine = W.Dropdown(options=["auto", *engines.installed()], value="auto", description="Engine")
        self.url = W.Text(placeholder="http://host:port/v1 (openai engine)", description="Server URL")
        self.model = W.Combobox(options=[r["model"] for r in list_models()], placeholder="embedded, path or org/repo",
                                description="Model", ensure_option=False, continuous_update=False)
        self.fit = W.HTML()   # the picked model's memory plan: size, fit, the largest context
        self.model.observe(lambda _: self._show_fit(), "value")
        self.engine.observe(lambda _: self._show_fit(), "value")
        self.load_button = W.Button(description="Load", button_style="primary", icon="download")
        self.unload_button = W.Button(description="Unload", icon="eject")
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="120px", visibility="hidden"))
        self.status = W.HTML()
        # one control per option the declaration gives a panel label (options.OPTIONS)
        self.controls = {o.name: control(o) for o in OPTIONS if o.panel}
        for name, w in self.controls.items():
            setattr(self, name, w)
        self.system = W.Textarea(placeholder="System prompt (chat mode)", description="System",
                                 layout=W.Layout(width="98%", height="48px"))
        self.prompt = W.Textarea(value="ROMEO:\n", description="Prompt", layout=W.Layout(width="98%", height="80px"))
        self.chat_mode = W.Checkbox(value=False, description="Chat", tooltip="continue the conversation",
                                    indent=False, layout=W.Layout(width="auto"))
        # the image the model is shown with the prompt: an uploaded file or a notebook variable
        self.image = None
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Image file",
                                   tooltip="show the model an image with the prompt")
        self.image_name = W.Text(placeholder="or a variable: fig, img, arr", description="Image",
                                 continuous_update=False, style={"description_width": "initial"},
                                 layout=W.Layout(width="auto"))
        self.thumbnail = W.Image(format="png", layout=W.Layout(max_width="96px", max_height="96px", display="none"))
        self.image_clear = W.Button(description="No image", icon="times", layout=W.Layout(width="auto"))
        self.upload.observe(lambda _: self._uploaded(), "value")
        self.image_name.observe(lambda _: self._named(), "value")
        self.image_clear.on_click(lambda _: self.set_image(None))
        self.generate_button = W.Button(description="Generate", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.clear_button = W.Button(description="Clear chat", icon="trash")
        self.output = W.Textarea(value="", layout=W.Layout(width="98%", height="220px"), disabled=True)
        self.output.add_class("vllama-output")
        self.tokens = W.HTML()   # the tokens shaded by probability, when logprobs are on
        self.stats = W.HTML()
        self.history = W.HTML()

        self.load_button.on_click(lambda _: self.load())
        self.unload_button.on_click(lambda _: self.unload())
        self.generate_button.on_click(lambda _: self.generate())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        self.session.listeners.append(self._on_session)

        self.widget = W.VBox([
            W.HTML("<b>vllama</b> — the kernel's engine"), self.hardware,
            W.HBox([self.engine, self.url]), W.HBox([self.model, self.load_button, self.unload_button, self.progress]),
            self.fit,
            self.status,
            W.HBox([self.max_tokens, self.seed, self.logprobs]), W.HBox([self.temperature, self.top_p]),
            W.HBox([self.repetition_penalty, self.min_p]), W.HBox([self.presence_penalty, self.frequency_penalty]),
            W.HBox([self.think, self.max_thinking, self.lora]), self.system,
            W.HBox([self.upload, self.image_name, self.image_clear, self.thumbnail]),
            self.prompt, W.HBox([self.generate_button, self.stop_button, self.chat_mode, self.clear_button]),
            self.output, self.tokens, self.stats, self.history,
        ])
        self.widget.add_class("vllama-panel")
        self._on_session(self.session)
        self._show_fit()

    # -- engine ---------------------------------------------------------------------------
    def _show_fit(self) -> None:
        """The plan for the model in the picker, before it is loaded: the embedded model, local files
        and the models the picker lists (a Hub name typed is not planned: each key would ask the Hub)."""
        import os

        name = self.model.value.strip()
        listed = name in self.model.options   # the list's Hub models are in the cache: planned from it
        if name.lower() not in EMBEDDED_NAMES and not listed and not os.path.exists(os.path.expanduser(name)):
            self.fit.value = ""
            return
        try:
            line = self.session.fit(name, engine=None if self.engine.value == "auto" else self.engine.value).line()
        except VllamaError as e:
            line = str(e)
        self.fit.value = f"<small>{html.escape(line)}</small>"

    def load(self) -> None:
        """Load the chosen model on the chosen engine (runs in the background; see wait())."""
        engine = None if self.engine.value == "auto" else self.engine.value
        model = self.model.value.strip() or "embedded"
        options = {}
        if (engine is None and self.url.value.strip()) or (engine is not None and not engines.kind(engine).in_process):
            engine, options = engines.REMOTE, {"url": self.url.value.strip()}
        self.progress.layout.visibility = "visible"
        self.progress.bar_style = "info"
        self._set_status(f"loading {model or 'the embedded model'}…")
        self._background(lambda: self.session.ensure(model, engine, **options), done="ready")

    def unload(self) -> None:
        self._guard(self.session.unload)
        self._on_session(self.session)

    # -- generation -----------------------------------------------------------------------
    def sampling(self) -> Sampling:
        return Sampling(**{name: value(BY_NAME[name], w) for name, w in self.controls.items()})

    def generate(self) -> None:
        """Stream a completion (or a chat reply) into the output, off the kernel's execute thread."""
        if self._thread is not None and self._thread.is_alive():
            self._set_status("busy: a generation is running — press Stop first", error=True)
            return
        try:
            s = self.sampling()
            images = [self.image] if self.image is not None else None
            if self.chat_mode.value or images or is_chat(s):
                stream = self.session.chat(self.prompt.value.strip(), s, system=self.system.value.strip() or None,
                                           keep=self.chat_mode.value, images=images)
            else:
                stream = self.session.stream(self.prompt.value, s)
        except VllamaError as e:
            self._set_status(str(e), error=True)
            return
        self.stream = stream
        self._stop.clear()
        self.output.value = ""
        self.tokens.value = ""
        self.stats.value = ""
        self.generate_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._pump, args=(stream,), name="vllama-panel", daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        last = 0.0
        try:
            for _ in stream:
                if self._stop.is_set():
                    stream.close()
                    break
                now = time.perf_counter()
                if now - last >= self.throttle:
                    self.output.value = shown(stream)
                    if stream.logprobs:
                        self.tokens.value = tokens_html(stream.logprobs)
                    last = now
        except VllamaError as e:
            self._set_status(str(e), error=True)
        except Exception as e:  # the panel must keep working
            self._set_status(f"generation failed: {e}", error=True)
        finally:
            res = stream.result
            self.output.value = shown(res)
            if res.logprobs:
                self.tokens.value = tokens_html(res.logprobs)
            self.stats.value = f"<i>{html.escape(res.stats_line())}</i>"
            self.generate_button.disabled, self.stop_button.disabled = False, True
            self._show_history()

    # -- the image --------------------------------------------------------------------------
    def set_image(self, obj, name: str = "the image") -> None:
        """Show the model `obj` (anything images.as_image takes; None: no image) with the next prompt."""
        from ..images import as_image

        try:
            self.image = None if obj is None else as_image(obj, name)
        except VllamaError as e:
            self.image = None
            self._set_status(str(e), error=True)
        self.thumbnail.value = self.image.png if self.image else b""
        self.thumbnail.layout.display = None if self.image else "none"
        if self.image:
            im = self.image
            self.thumbnail.tooltip = f"{im.width}×{im.height} {im.mode} · sha256 {im.sha256[:12]}"

    def _uploaded(self) -> None:
        files = self.upload.value
        if files:
            f = files[0]
            self.image_name.value = ""   # the file is the image now, not the variable named before
            self.set_image(bytes(f["content"]), f"the uploaded {f['name']}")

    def _named(self) -> None:
        from IPython import get_ipython

        name = self.image_name.value.strip()
        if not name:
            return
        ns = get_ipython().user_ns if get_ipython() is not None else {}
        if name not in ns:
            self._set_status(f"no variable {name!r} in the notebook: make the figure or image first", error=True)
            return
        self.set_image(ns[name], name)

    def stop(self) -> None:
        """Stop the running generation; the text so far stays."""
        self._stop.set()
        if self.stream is not None and self._thread is not None:
            self._thread.join(timeout=30)

    def clear(self) -> None:
        self.session.history.clear()
        self._show_history()

    def wait(self, timeout: float = 600) -> None:
        """Wait for the background load or generation (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    # -- display --------------------------------------------------------------------------
    def _background(self, fn, done: str) -> None:
        def run():
            try:
                fn()
                self._on_session(self.session)
            except VllamaError as e:
                self._set_status(str(e), error=True)
            except Exception as e:
                self._set_status(f"{type(e).__name__}: {e}", error=True)
            finally:
                self.progress.layout.visibility = "hidden"
        self._thread = threading.Thread(target=run, name="vllama-panel-load", daemon=True)
        self._thread.start()

    def _guard(self, fn) -> None:
        try:
            fn()
        except VllamaError as e:
            self._set_status(str(e), error=True)

    def _set_status(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "inherit"
        self.status.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _on_session(self, session) -> None:
        st = session.status()
        if "dead" in st:
            self._set_status(f"engine died · {st['engine']} · {st['model']} — {st['dead']}", error=True)
        elif st["loaded"]:
            mem = f" · {st['rss_bytes'] / 2**20:.0f} MB" if "rss_bytes" in st else ""
            shared = shared_text(session)
            mem += f" · {shared}" if shared else ""
            self._set_status(f"{st['state']} · {st['engine']} · {st['model']}{mem} — {st['why']}")
            self._show_adapters([a["name"] for a in st.get("adapters", ())])
            if session.state == "idle" and self.model.value.strip() not in (st["model"], st.get("path", "")):
                self.model.value = st["model"]
        else:
            self._set_status(f"{st['state']} · no model loaded — would use: {st['would_use']}")
            self._show_adapters([])

    def _show_adapters(self, names: list) -> None:
        """The picker's adapters: the base model, then each added one (a removed pick falls back to the base)."""
        choices = BASE_CHOICE + tuple((n, n) for n in names)
        if tuple(self.lora.options) != choices:
            picked = self.lora.value if self.lora.value in names else ""
            self.lora.options = choices
            self.lora.value = picked

    def _show_history(self) -> None:
        from ..messages import image_urls, text_of

        rows = [f"<b>{html.escape(m['role'])}</b>: {html.escape(text_of(m.get('content')))}"
                + (" [image]" * len(image_urls([m]))) for m in self.session.history]
        self.history.value = "<br>".join(rows)

    def close(self) -> None:
        if self._on_session in self.session.listeners:
            self.session.listeners.remove(self._on_session)
        self.widget.close()

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def shown(out) -> str:
    """The output box's text: the thinking first, when there is any, then the answer."""
    thought = out.reasoning.strip()
    return f"Thinking: {thought}\n\n{out.text}" if thought else out.text


BASE_CHOICE = (("base model", ""),)   # "" shows the label; a None value would show a blank box
THINK_CHOICES = (("model's default", None), ("on", True), ("off", False), ("low", "low"), ("medium", "medium"),
                 ("high", "high"))


def control(o):
    """The panel control of option `o`: its label from the declaration, its help as the tooltip.
    Optional numbers show -1 for "off"."""
    style, layout = {"description_width": "initial"}, W.Layout(width="auto")
    kw = {"description": o.panel, "tooltip": o.help, "style": style, "layout": layout}
    if o.kind == "think":
        return W.Dropdown(options=THINK_CHOICES, value=None, **kw)
    if o.name == "lora":   # the adapters added to the loaded model (filled as the session changes)
        return W.Dropdown(options=BASE_CHOICE, value="", **kw)
    if o.kind == "float":
        return W.FloatSlider(value=o.default, min=max(o.low, 0.01) if o.low_open else o.low, max=o.high, step=0.01, **kw)
    if o.optional:
        return W.IntText(value=-1, **{**kw, "description": f"{o.panel} (-1 off)"})
    return W.BoundedIntText(value=o.default, min=o.low, max=1_000_000, **kw)


def value(o, w):
    v = w.value
    return None if (o.optional and o.kind == "int" and v < 0) or (o.name == "lora" and not v) else v


def panel(throttle: float = 0.1) -> Panel:
    """The engine panel for the kernel's session (display it, or let the cell show it)."""
    return Panel(throttle=throttle)
