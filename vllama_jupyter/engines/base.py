"""The engine contract: everything the session, the magics, the widgets, the share and the
benchmarks use of an engine is declared here, and what an engine and its loaded model can do is
one value, `capabilities()`, so no caller asks which engine it holds.

`stream`, `chat` and `batch` are the only ways in: each holds the request against the
capabilities (gate.check) and then hands it to the engine's `_complete` / `_chat`, which never
see an option they cannot honour. A stream validates its input eagerly (bad input fails before
anything runs) and opens the request only when its first delta is asked for."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .. import gate
from ..capabilities import Capabilities
from ..errors import VllamaError
from ..result import Result, Stream
from ..messages import check_messages, has_images
from ..provenance import PENDING
from ..reasoning import Splitter, opens_thinking
from ..sampling import Sampling, settings
from ..templates import plain_prompt, reasoning_format, render_template, think_kwargs, tool_format


class BaseEngine:
    name = "base"

    def __init__(self) -> None:
        self.model_name = ""
        self.ref = None   # what is loaded (models.ModelRef or models.RemoteRef)
        self._about: dict | None = None

    # -- to implement ---------------------------------------------------------------------
    @classmethod
    def check(cls, ref, options: dict, replacing: bool = True):
        """Validate the reference and options with nothing loaded and nothing freed (files,
        headers, option ranges, memory, a server's reachability). Returns the reference to load.
        replacing=False: no model would be freed for this one, so a check that costs a partial
        load (the load itself would fail the same way) may be left out."""
        raise NotImplementedError

    def load(self, ref, **options) -> None:
        raise NotImplementedError

    @classmethod
    def plan(cls, ref, n_ctx: int | None = None, options: dict | None = None):
        """The memory plan for loading `ref` with a context of `n_ctx` tokens (nothing is loaded)."""
        raise VllamaError(f"the {cls.name} engine makes no memory plan: plans are made for models that run "
                          "here, on llama.cpp or vLLM")

    def capabilities(self) -> Capabilities:
        """What this engine and its loaded model can do."""
        raise NotImplementedError

    def _complete(self, prompt: str | list[int], s: Sampling) -> Stream:
        """A completion of a prompt that gate.check has passed."""
        raise NotImplementedError

    def _chat(self, messages: list[dict], s: Sampling, tools: list[dict] | None) -> Stream:
        """A chat turn that gate.check has passed."""
        raise NotImplementedError

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text` as a prompt (with BOS where the model adds one). special=True: the
        text is a rendered chat template, whose special tokens are read as such and which carries
        its own BOS."""
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:
        """The text of token ids."""
        raise NotImplementedError

    def vocab_size(self) -> int:
        raise NotImplementedError

    def context_length(self) -> int:
        raise NotImplementedError

    def info(self) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        """Free everything: memory, child processes, connections. Safe to call twice."""
        raise NotImplementedError

    def dead(self) -> str | None:
        """Why the engine can no longer serve (its process died), or None while it can."""
        return None

    def version(self) -> str:
        """The engine library's version (or the server's kind)."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What identifies the loaded model: {'model_sha256': ...} or {'model_revision': ...};
        a large model's hash may still be 'pending' (it runs in the background from the load)."""
        from ..provenance import identity
        return identity(self.ref.path, wait=False)

    def prefetch_identity(self) -> None:
        """Start what `identity` needs in the background (called once the model is loaded)."""
        from ..provenance import prefetch
        if self.ref is not None and self.ref.path.exists():
            prefetch(self.ref.path)

    def settings(self) -> dict:
        """The options the engine runs with (for the record)."""
        return {}

    def embed(self, texts: list[str], normalize: bool = True):
        """Embeddings of `texts` as a numpy array (len(texts), dim)."""
        raise VllamaError(f"the {self.name} engine has no embeddings")

    # -- built on the above ---------------------------------------------------------------
    def provenance(self, s: Sampling) -> dict:
        """The record's fixed part for this engine and model, with the sampling settings `s`."""
        if self._about is None:
            import json

            from ..about import __version__
            from ..provenance import hardware_line

            try:
                ctx = self.context_length()
            except VllamaError:
                ctx = None
            about = {"engine": self.name, "engine_version": self.version(), "model": self.model_name,
                     **self.identity(), "context_length": ctx,
                     "engine_options": json.loads(json.dumps(self.settings(), default=str)),
                     "hardware": hardware_line(), "vllama_jupyter": __version__}
            if about.get("model_sha256") == PENDING:   # the next record has it
                return {**about, **self._adapter_of(s), "sampling": settings(s)}
            self._about = about
        return {**self._about, **self._adapter_of(s), "sampling": settings(s)}

    def _adapter_of(self, s: Sampling) -> dict:
        """The record's adapter: name, SHA-256 and scale (none for the base model)."""
        adapters = getattr(getattr(self, "lora", None), "added", {})
        return {"lora": adapters[s.lora].record()} if s.lora in adapters else {}

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` is as a prompt, with this model's tokenizer."""
        if not isinstance(text, str):
            raise VllamaError(f"count_tokens needs text, not {type(text).__name__}")
        if text.strip():
            check_prompt(text)
        return len(self.tokenize(text))

    def prompt_tokens(self, messages: list[dict]) -> int:
        """How many tokens these chat messages are as a prompt (images as the model counts them)."""
        return self.count_tokens(self.chat_prompt(messages))

    def _new_stream(self, start, prompt_tokens: int, s: Sampling, context_length: int | None = None,
                    extra: dict | None = None, splitter=None) -> Stream:
        """A Stream of this engine's output whose record tells how it was made (`extra`: facts
        of this request, such as whether a cached prompt prefix was re-used)."""
        return Stream(start, prompt_tokens=prompt_tokens, engine=self.name, model=self.model_name,
                      context_length=context_length, provenance=lambda: {**self.provenance(s), **(extra or {})},
                      splitter=splitter)

    def chat_template(self) -> str | None:
        """The model's Jinja chat template, None when it has none (engines with templates override this)."""
        return None

    def image_marker(self) -> str | None:
        """The text that stands for an image in this model's prompt; None: the model takes no images."""
        return None

    def why_no_images(self) -> str | None:
        """Why this engine cannot show this model images, when it is not that the model has no vision part."""
        return None

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None = None, think=None) -> str:
        """The prompt text for these chat messages: the model's template with the tools offered and
        its thinking switch set to `think`; a plain play-script rendering for models without one."""
        msgs = check_messages(messages)
        if has_images(msgs):
            from .vision import with_markers

            gate.check_images(self.capabilities(), msgs)
            msgs = with_markers(msgs, self.image_marker())
        template = self.chat_template()
        if not template:   # gate.check has refused tools and think for such a model
            return plain_prompt(msgs)
        return self.render(template, msgs, tools, think_kwargs(template, think))

    def render(self, template: str, messages: list[dict], tools, kwargs: dict) -> str:
        return render_template(template, messages, tools=tools, kwargs=kwargs)

    def chat_plan(self, messages: list[dict], s: Sampling, tools: list[dict] | None) -> tuple[str, object]:
        """The prompt for a chat request and the splitter that reads thinking and tool calls from its output."""
        template = self.chat_template()
        offered = tools if s.tool_choice != "none" else None
        calls = tool_format(template) if offered else None
        prompt = self.chat_prompt(messages, offered, s.think)
        fmt = reasoning_format(template)
        return prompt, Splitter(fmt, thinking=opens_thinking(prompt, fmt), tools=calls)

    @staticmethod
    def forced_call(tools: list[dict], s: Sampling, splitter) -> str:
        """The grammar of a forced tool call; a thought the prompt opened is closed first."""
        from ..reasoning import CLOSE_FOR_CALL
        from ..tools import call_grammar

        before = CLOSE_FOR_CALL[splitter.fmt] if splitter.state == "reasoning" else ""
        return call_grammar(tools, s.tool_choice, splitter.tools, before)

    # -- the ways in: each request passes the gate first --------------------------------------
    def stream(self, prompt: str | list[int], sampling: Sampling | None = None) -> Stream:
        """A completion of `prompt` (text or token ids)."""
        s = sampling or Sampling()
        gate.check(self.capabilities(), s, chat=False)
        return self._complete(prompt, self.token_ids(s))

    def chat(self, messages: list[dict], sampling: Sampling | None = None, tools: list[dict] | None = None) -> Stream:
        """Answer a conversation (OpenAI message shape); `tools` are OpenAI tool schemas."""
        s = sampling or Sampling()
        gate.check(self.capabilities(), s, chat=True, tools=tools, messages=messages)
        return self._chat(messages, self.token_ids(s), tools)

    def generate(self, prompt: str | list[int], sampling: Sampling | None = None) -> Result:
        return self.stream(prompt, sampling).run()

    def batch(self, prompts: list, sampling: Sampling | None = None) -> list[Result]:
        """Completions of several prompts: run together where the engine can (`_batch`), else in turn."""
        s = sampling or Sampling()
        gate.check(self.capabilities(), s, chat=False)
        return self._batch(check_batch(prompts, self.check_prompt), self.token_ids(s))

    def _batch(self, prompts: list, s: Sampling) -> list[Result]:
        return [self._complete(p, s).run() for p in prompts]

    def token_ids(self, s: Sampling) -> Sampling:
        """`s` with logit_bias keyed by token ids: a token's text becomes its id (one token, or
        one line), an id is checked against the vocabulary where it is known."""
        if not s.logit_bias:
            return s
        known = self.capabilities().in_process
        out = {}
        for key, bias in s.logit_bias.items():
            if isinstance(key, str):
                if not known:
                    raise VllamaError(f"logit_bias {key!r}: a server's vocabulary is not known here, so give token "
                                      "ids (see %vllama tokens on the same model)")
                key = self.single_token(key)
            elif known and key >= self.vocab_size():
                raise VllamaError(f"logit_bias token id {key} is outside this model's vocabulary of "
                                  f"{self.vocab_size():,} tokens: give an id below it")
            out[key] = bias
        return replace(s, logit_bias=out)

    def single_token(self, text: str) -> int:
        """The id of the one token `text` is, or one line saying what it is instead."""
        ids = self.inner_tokens(text)
        if len(ids) != 1:
            raise VllamaError(f"logit_bias {text!r} is {len(ids)} tokens here ({ids}), not one: give one token's text "
                              "or its id")
        return ids[0]

    def inner_tokens(self, text: str) -> list[int]:
        """`text`'s tokens where it follows other text: no BOS, and no space that a tokenizer puts
        before the start of a text (so ' sea' is the word inside a sentence, 'sea' a word's end)."""
        head = self.tokenize("\n")
        ids = self.tokenize("\n" + text)
        return ids[len(head):] if ids[:len(head)] == head else ids

    def check_prompt(self, prompt) -> None:
        """Text, or token ids inside this model's vocabulary."""
        check_prompt(prompt, self.vocab_size())


def template_capabilities(template: str | None) -> dict:
    """The capabilities a chat template gives an in-process engine's model."""
    from ..capabilities import think_values

    return {"chat_template": bool(template), "thinking": reasoning_format(template),
            "think_values": think_values(template) if template else (), "tool_calls": tool_format(template)}


def check_room(n_prompt: int, context: int, option: str, what: str = "") -> None:
    """One line when a prompt of `n_prompt` tokens leaves no room in a `context`-token window."""
    if n_prompt >= context:
        raise VllamaError(f"the prompt is {n_prompt} tokens{what} but the context holds {context}: "
                          f"shorten the prompt or load the model with a larger {option}")


def check_batch(prompts, check=None) -> list:
    """Any iterable of prompts (list, tuple, generator, pandas Series) as a checked list."""
    if isinstance(prompts, (str, bytes, dict)) or not isinstance(prompts, Iterable):
        raise VllamaError(f"batch needs a list of prompts, not {type(prompts).__name__}: "
                          "pass a list, a generator or a DataFrame column")
    items = list(prompts)
    if not items:
        raise VllamaError("batch needs at least one prompt (the list is empty)")
    for i, p in enumerate(items):
        try:
            (check or check_prompt)(p)
        except VllamaError as e:
            raise VllamaError(f"prompt {i} of the batch: {e}") from None
    return items


def check_texts(texts) -> list[str]:
    """Texts to embed: one string, or any iterable of non-empty strings."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Iterable):
        raise VllamaError(f"embed needs a list of texts, not {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise VllamaError("embed needs at least one text (the list is empty)")
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise VllamaError(f"text {i} to embed is {'empty' if isinstance(t, str) else type(t).__name__}: "
                              "give non-empty strings")
        check_prompt(t)
    return items


def as_matrix(rows, normalize: bool):
    """Embeddings as a float32 array (n, dim), each row scaled to length 1 when `normalize`."""
    import numpy as np

    m = np.asarray(rows, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        m = m / np.where(norms == 0, 1, norms)
    return m


def check_prompt(prompt, vocab_size: int | None = None) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise VllamaError("the prompt is empty: write some text to continue")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as e:
            raise VllamaError(f"the prompt holds text that is not valid Unicode ({e.reason} at character "
                              f"{e.start}): clean the text, e.g. s.encode('utf-8', 'replace').decode()") from None
    elif isinstance(prompt, (list, tuple)):
        if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise VllamaError("a token-id prompt must be a non-empty list of integers")
        if vocab_size is not None:
            bad = next((t for t in prompt if not 0 <= t < vocab_size), None)
            if bad is not None:
                raise VllamaError(f"token id {bad} is outside this model's vocabulary (0..{vocab_size - 1}): "
                                  "take ids from tokenize()")
    else:
        raise VllamaError(f"the prompt must be text or a list of token ids, not {type(prompt).__name__}")
