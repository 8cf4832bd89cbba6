"""Any OpenAI-compatible server as the kernel's engine: a remote vLLM cluster, Ollama, the
llama.cpp server, MAX, SGLang, TGI. Streams over SSE with per-chunk timestamps; closing the
stream closes the HTTP response, which frees the server's slot.

The API key is read from an environment variable the user names; its value is never stored on
the engine, printed, or put in a result."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from .. import gate
from ..capabilities import Capabilities
from ..errors import VllamaError
from ..finish import STOP, from_wire
from ..redact import redact
from ..models import RemoteRef
from ..result import Delta, Result, Stream, finished
from ..sampling import Sampling, with_seed
from ..images import as_image
from ..messages import check_messages, has_images, image_urls
from ..options import THINK_LEVELS, forced, to_openai
from ..reasoning import Splitter
from .base import BaseEngine, check_prompt
from .chunks import Malformed, NoLogprobs, ServerError, parse_chunk
from .openai_endpoints import Endpoints
from .remote import PRESETS, check_options, remote_ref


class Engine(Endpoints, BaseEngine):
    """OpenAI-compatible server. Options: url, preset (vllm, ollama, llamacpp-server, llama-server, max,
    sglang, tgi), api_key_env (the NAME of an environment variable), timeout, concurrency,
    context_length (the server's context in tokens, for servers that do not list it)."""

    name = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.client = None
        self.url = ""
        self.preset = PRESETS["openai"]
        self.preset_name = "openai"
        self.api_key_env: str | None = None
        self.concurrency = 8
        self.load_seconds = 0.0
        self.max_model_len: int | None = None   # when the server lists it (vLLM does)
        self.shared_by: int | None = None         # the pid of the notebook whose shared engine this is
        self.shared_file: str | None = None
        self._lengths: dict[str, int] = {}
        self._tokenizer: tuple | None = None     # the tokenize endpoint that answered
        self._gone: str | None = None             # why a shared engine stopped answering
        self._behind: dict[str, dict] = {}        # a share's model -> the capabilities of the engine behind it

    @classmethod
    def check(cls, ref: RemoteRef, options: dict, replacing: bool = True) -> RemoteRef:
        """Options, then the server: reachable, and serving the model (the first it lists when none is named)."""
        check_options(options)
        probe = cls()
        try:
            probe._connect(ref.url, options)
            return RemoteRef(ref.url, probe._pick(ref.model))
        finally:
            probe.close()

    @classmethod
    def connect(cls, model: str | None = None, **options) -> "Engine":
        """An engine connected to a server outside any session (scripts, benchmarks, tests)."""
        eng = cls()
        eng.load(cls.check(remote_ref(model, options), options), **options)
        return eng

    def load(self, ref: RemoteRef, **options) -> None:
        check_options(options)
        t0 = time.perf_counter()
        self._connect(ref.url, options)
        self.model_name = self._pick(ref.model)
        self.max_model_len = options.get("context_length") or self._lengths.get(self.model_name)
        self.load_seconds = time.perf_counter() - t0

    def _connect(self, url: str, options: dict) -> None:
        import httpx

        self.preset_name = options.get("preset") or "openai"
        self.preset = PRESETS[self.preset_name]
        self.url = url
        self.api_key_env = options.get("api_key_env")
        self.shared_by, self.shared_file = options.get("shared_by"), options.get("shared_file")
        self.concurrency = options.get("concurrency", 8)
        timeout = options.get("timeout", 60.0)
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0),
                                   limits=httpx.Limits(max_connections=max(self.concurrency, 8)))

    def _pick(self, model: str | None) -> str:
        models = self._models()
        if not models:
            raise VllamaError(f"the server at {self.url} lists no models: is a model loaded there?")
        if model is None:
            return models[0]
        if model not in models:
            raise VllamaError(f"the server at {self.url} has no model {model!r}: it has {', '.join(models[:10])}")
        return model

    # -- HTTP -----------------------------------------------------------------------------
    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def _headers(self) -> dict:
        headers = {"Authorization": f"Bearer {self._key()}"} if self.api_key_env else {}
        if self.shared_by:
            from ..seam import CLIENT_HEADER
            headers[CLIENT_HEADER] = str(os.getpid())
        return headers

    def dead(self) -> str | None:
        if self.shared_by and self.client is not None:
            from ..sharing import still_shared
            return still_shared(self.shared_file, self.shared_by) or self._gone
        return None

    def _scrub(self, text: str) -> str:
        """`text` without the API key's value, wherever the server echoed it."""
        return redact(text, self._key())

    def _fail(self, message: str) -> VllamaError:
        return VllamaError(self._scrub(message))

    def _models(self) -> list[str]:
        data = self._request("GET", "/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self._fail(f"the server at {self.url} answered /models without a model list: "
                             "is this an OpenAI-compatible server (its URL ends in /v1)?")
        good = [m for m in items if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
        self._lengths = {m["id"]: m["max_model_len"] for m in good
                         if isinstance(m.get("max_model_len"), int) and m["max_model_len"] > 0}
        if self.preset_name == "vllama":   # a share says what the model behind it can do
            self._behind = {m["id"]: m["capabilities"] for m in good if isinstance(m.get("capabilities"), dict)}
        return [m["id"] for m in good]

    def _request(self, method: str, path: str, body: dict | None = None):
        import httpx

        try:
            r = self.client.request(method, path, json=body, headers=self._headers())
        except httpx.HTTPError as e:
            raise self._http_error(e) from None
        self._check_status(r.status_code, r.text)
        try:
            return r.json()
        except ValueError:
            raise self._fail(f"the server at {self.url} answered {path} with something that is not JSON") from None

    def _http_error(self, e) -> VllamaError:
        import httpx

        gone = self.dead()
        if gone:
            return self._fail(gone)
        if self.shared_by and isinstance(e, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            self._gone = (f"the shared engine of another notebook (pid {self.shared_by}) stopped answering: "
                          "this kernel lets go of it, and its next request loads a model here")
            return self._fail(self._gone)
        if isinstance(e, httpx.ConnectError):
            return self._fail(f"nothing is listening at {self.url} (connection refused): start the server or check the url")
        if isinstance(e, httpx.TimeoutException):
            return self._fail(f"no answer from {self.url} in time: the server is busy or stuck (raise timeout=...)")
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self._fail(f"the connection to {self.url} broke mid-answer (did the server stop?)")
        return self._fail(f"could not talk to {self.url}: {type(e).__name__}")

    def _check_status(self, status: int, text: str, images: bool = False) -> None:
        if status < 400:
            return
        detail = _error_text(self._scrub(text))   # the key goes before the cut: a cut key no longer matches
        if status in (401, 403):
            hint = f"check the key in ${self.api_key_env}" if self.api_key_env else "give api_key_env=NAME of the variable holding the key"
            raise self._fail(f"the server at {self.url} refused the API key ({status}): {hint}")
        if images and status in (400, 422, 500, 501):
            raise self._fail(f"the server at {self.url} refused the image (HTTP {status}: {detail}): {VISION_FIX}")
        if status == 404:
            raise self._fail(f"the server at {self.url} has no such model or endpoint (404): {detail}")
        if status >= 500:
            raise self._fail(f"the server at {self.url} failed (HTTP {status}): {detail}")
        raise self._fail(f"the server at {self.url} refused the request (HTTP {status}): {detail}")

    # -- requests -------------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        self._require()
        p = self.preset
        behind = self._behind.get(self.model_name)
        if behind is not None:   # another notebook's engine: its model's facts, through the wire
            fields = {k: v for k, v in behind.items() if k in Capabilities.__dataclass_fields__}
            fields["think_values"] = tuple(fields.get("think_values") or ())
            fields["samplers"] = tuple(fields.get("samplers") or ())
            return Capabilities(**{**fields, "engine": "openai", "label": p.label, "in_process": False,
                                   "shared_from": self.shared_by, "close_thought": False, "parallel": self.concurrency,
                                   "concurrent": True})
        return Capabilities(
            "openai", p.label, False, model=self.model_name, context_length=self.max_model_len,
            shared_from=self.shared_by, think_values=(True, False, *THINK_LEVELS) if p.think else (),
            tool_calls="server" if p.tools else None, images=True, grammar=p.grammar, json_schema=p.schema_field is not None,
            logprobs=True, top_k=p.top_k, ignore_eos=p.ignore_eos, samplers=p.samplers,
            embeddings=True, parallel=self.concurrency, concurrent=True)

    def _body(self, s: Sampling, stream: bool, chat: bool = False) -> dict:
        body = {"model": self.model_name, "stream": stream, **to_openai(s, self.preset, chat)}
        for key, v in self.preset.extra:   # unless the request sets them
            body.setdefault(key, v)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _complete(self, prompt, s: Sampling) -> Stream:
        self._require()
        check_prompt(prompt)
        s = with_seed(s)
        body = self._body(s, True)
        body["prompt"] = prompt if isinstance(prompt, str) else [int(t) for t in prompt]
        return self._open("/completions", body, False, s)

    def _chat(self, messages: list[dict], s: Sampling, tools: list[dict] | None) -> Stream:
        self._require()
        s = with_seed(s)
        body = self._body(s, True, chat=True)
        body["messages"] = check_messages(messages)
        # a broken image fails here, not at the server; the record keeps each one's hash
        seen = [(as_image(u).record() if u.startswith("data:") else {"url": u}) for u in image_urls(body["messages"])]
        if tools:
            body["tools"] = tools
        # a server without a reasoning or tool parser leaves the markup in the text: read it here
        return self._open("/chat/completions", body, True, s, Splitter("think", tools="hermes" if tools else None),
                          {"images": seen} if seen else None)

    def _open(self, path: str, body: dict, chat: bool, s: Sampling, splitter=None, extra=None) -> Stream:
        return self._new_stream(lambda: self._sse(path, body, chat, s.logprobs), 0, s, self.max_model_len,
                                extra, splitter=splitter)

    def _sse(self, path: str, body: dict, chat: bool, logprobs: int | None):
        import httpx
        from httpx_sse import SSEError, connect_sse

        tokens = 0
        images = has_images(body.get("messages") or [])
        try:
            with connect_sse(self.client, "POST", path, json=body, headers=self._headers()) as source:
                r = source.response
                if r.status_code >= 400:
                    r.read()
                    self._check_status(r.status_code, r.text, images)
                if "text/event-stream" not in r.headers.get("content-type", ""):
                    raise self._fail(f"the server at {self.url} did not answer with an event stream "
                                     f"(content-type {r.headers.get('content-type', 'none')!r}): is it OpenAI-compatible?")
                reason, counted, called = None, False, False
                for event in source.iter_sse():
                    if event.data.strip() == "[DONE]":
                        break
                    for d in self._chunk(event.data, chat, logprobs):
                        called = called or bool(d.tool_calls) or "<tool_call>" in d.text
                        tokens += 1 if d.text or d.token_ids else 0
                        counted = counted or d.usage is not None
                        reason = d.finish_reason or reason
                        # until usage comes, one token per chunk, as these servers send
                        yield d._replace(finish_reason=None, usage=d.usage or (None if counted else (None, tokens)))
                else:
                    if reason is None and images and not tokens:   # it failed on the image after the headers
                        raise self._fail(f"the server at {self.url} refused the image (it ended the stream before any "
                                         f"output): {VISION_FIX}")
                    if reason is None:  # some servers end with a finish reason and no [DONE]
                        raise self._fail(f"the server at {self.url} closed the stream after {tokens} chunks "
                                         "without finishing it: the output is truncated")
                if forced(body.get("tool_choice")) and not called:
                    raise self._fail(f"tool_choice: the server at {self.url} answered without the tool call it was "
                                     "told to make (it does not force calls for this model): leave tool_choice out")
                yield Delta("", (), time.perf_counter(), from_wire(reason, STOP))
        except httpx.HTTPError as e:
            raise self._http_error(e) from None
        except (SSEError, UnicodeDecodeError) as e:
            raise self._fail(f"the server at {self.url} sent a malformed event stream ({type(e).__name__})") from None

    def _chunk(self, data: str, chat: bool, logprobs: int | None) -> list[Delta]:
        """The deltas in one streamed chunk, whose shape is checked field by field."""
        try:
            return parse_chunk(data, chat, logprobs)
        except Malformed as e:
            raise self._bad(str(e)) from None
        except ServerError as e:
            raise self._fail(f"the server at {self.url} failed mid-stream: {_error_text(self._scrub(str(e)))}") from None
        except NoLogprobs:
            raise self._fail(f"the server at {self.url} ({self.preset.label}) sent no logprobs: it does not "
                             "support them for this model; leave logprobs out, or load the model in-process") from None
        except ValueError:
            raise self._fail(f"the server at {self.url} sent a malformed stream (not JSON): {self._scrub(data)[:80]!r}") from None

    def _bad(self, what: str) -> VllamaError:
        return self._fail(f"the server at {self.url} sent a malformed stream: {what}")

    def complete(self, prompt, sampling: Sampling | None = None) -> Result:
        """One non-streaming completion request (the server's own text, for comparisons)."""
        self._require()
        check_prompt(prompt)
        s = sampling or Sampling()
        gate.check(self.capabilities(), s, chat=False)
        body = self._body(s, False)
        body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
        t0 = time.perf_counter()
        data = self._request("POST", "/completions", body)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
                or not isinstance(choices[0].get("text"), str):
            raise self._bad("a completion without choices[0].text")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        counts = (usage.get("prompt_tokens"), usage.get("completion_tokens")) if usage else None
        delta = Delta(choices[0]["text"], (), time.perf_counter(), from_wire(choices[0].get("finish_reason"), STOP),
                      usage=counts)
        return finished([delta], t_start=t0, prompt_tokens=0, engine=self.name, model=self.model_name)

    def _batch(self, prompts: list, s: Sampling) -> list[Result]:
        """Requests sent concurrently (at most `concurrency` at once), so the server batches them."""
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._complete(p, s).run(), prompts))

    def check_prompt(self, prompt) -> None:
        check_prompt(prompt)   # the vocabulary of a remote model is not known

    def version(self) -> str:
        return self.preset.label

    def identity(self) -> dict:
        return {"server": self.url}

    def prefetch_identity(self) -> None:
        pass

    def settings(self) -> dict:
        return {"preset": self.preset_name, "context_length": self.max_model_len}

    def vocab_size(self) -> int:
        raise VllamaError(UNKNOWN_VOCABULARY)

    def detokenize(self, ids: list[int]) -> str:
        raise VllamaError(UNKNOWN_VOCABULARY)

    def context_length(self) -> int:
        if self.max_model_len is None:
            raise VllamaError(f"the server at {self.url} does not say how long its context is")
        return self.max_model_len

    def _require(self) -> None:
        if self.client is None:
            raise VllamaError("no server is connected: load(model, engine='openai', url=...) first")

    def info(self) -> dict:
        self._require()
        return {"engine": self.name, "version": self.preset.label, "model": self.model_name,
                "path": self.url, "device": f"remote ({self.preset.label})",
                "api_key": f"from ${self.api_key_env}" if self.api_key_env else "none",
                "concurrency": self.concurrency, "load_seconds": round(self.load_seconds, 3),
                **({"context_length": self.max_model_len} if self.max_model_len else {})}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __repr__(self) -> str:
        return f"<openai engine {self.model_name!r} at {self.url}>"


UNKNOWN_VOCABULARY = ("the vocabulary of a remote model is not known: give prompts as text, "
                      "or load the model in-process (llamacpp or vllm)")
VISION_FIX = ("serve a vision model there with its projector (llama.cpp: --mmproj, or clip_model_path with "
              "chat_format mtmd; vLLM: a vision-language model)")


def _error_text(text: str) -> str:
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        msg = str(msg or (data.get("detail") if isinstance(data, dict) else "") or text)
    except (ValueError, AttributeError):
        msg = text
    return " ".join(msg.split())[:200] or "(no detail)"
