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
from dataclasses import dataclass

from ..chat import check_messages
from ..errors import VllamaError
from ..result import Delta, Result, Stream
from ..sampling import Sampling
from .base import BaseEngine, check_batch, check_prompt


@dataclass(frozen=True)
class Preset:
    label: str
    url: str
    top_k: bool = False          # accepts top_k / ignore_eos extensions
    schema_field: str = "response_format"
    extra: tuple = ()            # body fields that make its sampling match the in-process engines


PRESETS = {
    "vllm": Preset("vLLM", "http://127.0.0.1:8000/v1", top_k=True, schema_field="structured_outputs"),
    "ollama": Preset("Ollama", "http://127.0.0.1:11434/v1"),
    "llamacpp-server": Preset("llama.cpp server", "http://127.0.0.1:8080/v1", top_k=True, schema_field="json_schema",
                              extra=(("repeat_penalty", 1.0), ("min_p", 0.0))),
    "max": Preset("MAX", "http://127.0.0.1:8000/v1"),
    "sglang": Preset("SGLang", "http://127.0.0.1:30000/v1", top_k=True),
    "tgi": Preset("TGI", "http://127.0.0.1:8080/v1"),
    "openai": Preset("OpenAI-compatible", ""),
}


class Engine(BaseEngine):
    """OpenAI-compatible server. Options: url, preset (vllm, ollama, llamacpp-server, max,
    sglang, tgi), api_key_env (the NAME of an environment variable), timeout, concurrency."""

    name = "openai"
    concurrent = True

    def __init__(self) -> None:
        super().__init__()
        self.client = None
        self.url = ""
        self.preset = PRESETS["openai"]
        self.preset_name = "openai"
        self.api_key_env: str | None = None
        self.concurrency = 8
        self.load_seconds = 0.0

    @staticmethod
    def check(ref, options: dict) -> None:
        allowed = {"url", "preset", "api_key_env", "timeout", "concurrency"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise VllamaError(f"unknown option {unknown[0]!r} for the openai engine: use url, preset, "
                              "api_key_env, timeout, concurrency")
        preset = options.get("preset")
        if preset is not None and preset not in PRESETS:
            raise VllamaError(f"unknown server preset {preset!r}: use one of {', '.join(PRESETS)}")
        if not (options.get("url") or (preset and PRESETS[preset].url)):
            raise VllamaError("the openai engine needs a server: give url='http://host:port/v1' or a preset")
        env = options.get("api_key_env")
        if env is not None and not os.environ.get(env):
            raise VllamaError(f"the environment variable {env} (api_key_env) is not set: export it before loading")
        conc = options.get("concurrency", 8)
        if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
            raise VllamaError(f"concurrency must be a whole number >= 1 (got {conc!r})")

    def load(self, model: str | None, url: str | None = None, preset: str | None = None,
             api_key_env: str | None = None, timeout: float = 60.0, concurrency: int = 8) -> None:
        import httpx

        self.check(model, {"url": url, "preset": preset, "api_key_env": api_key_env, "concurrency": concurrency})
        self.preset_name = preset or "openai"
        self.preset = PRESETS[self.preset_name]
        self.url = (url or self.preset.url).rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        t0 = time.perf_counter()
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0),
                                   limits=httpx.Limits(max_connections=max(concurrency, 8)))
        models = self._models()
        if model in (None, "", "embedded", "default"):
            if not models:
                raise VllamaError(f"the server at {self.url} lists no models: name one with the model argument")
            model = models[0]
        elif model not in models and models:
            raise VllamaError(f"the server at {self.url} has no model {model!r}: it has {', '.join(models[:10])}")
        self.model_name = model
        self.load_seconds = time.perf_counter() - t0

    # -- HTTP -----------------------------------------------------------------------------
    def _headers(self) -> dict:
        if not self.api_key_env:
            return {}
        return {"Authorization": f"Bearer {os.environ.get(self.api_key_env, '')}"}

    def _models(self) -> list[str]:
        data = self._request("GET", "/models")
        return [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            r = self.client.request(method, path, json=body, headers=self._headers())
        except httpx.HTTPError as e:
            raise self._http_error(e) from None
        self._check_status(r.status_code, r.text)
        try:
            return r.json()
        except ValueError:
            raise VllamaError(f"the server at {self.url} answered {path} with something that is not JSON") from None

    def _http_error(self, e) -> VllamaError:
        import httpx

        if isinstance(e, httpx.ConnectError):
            return VllamaError(f"nothing is listening at {self.url} (connection refused): start the server or check the url")
        if isinstance(e, httpx.TimeoutException):
            return VllamaError(f"no answer from {self.url} in time: the server is busy or stuck (raise timeout=...)")
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
            return VllamaError(f"the connection to {self.url} broke mid-answer (did the server stop?)")
        return VllamaError(f"could not talk to {self.url}: {type(e).__name__}")

    def _check_status(self, status: int, text: str) -> None:
        if status < 400:
            return
        detail = _error_text(text)
        if status in (401, 403):
            hint = f"check the key in ${self.api_key_env}" if self.api_key_env else "give api_key_env=NAME of the variable holding the key"
            raise VllamaError(f"the server at {self.url} refused the API key ({status}): {hint}")
        if status == 404:
            raise VllamaError(f"the server at {self.url} has no such model or endpoint (404): {detail}")
        if status >= 500:
            raise VllamaError(f"the server at {self.url} failed (HTTP {status}): {detail}")
        raise VllamaError(f"the server at {self.url} refused the request (HTTP {status}): {detail}")

    # -- requests -------------------------------------------------------------------------
    def _body(self, s: Sampling, stream: bool) -> dict:
        body = {"model": self.model_name, "max_tokens": s.max_tokens, "temperature": s.temperature,
                "top_p": s.top_p, "stream": stream}
        body.update(self.preset.extra)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if self.preset.top_k:
            if s.top_k:
                body["top_k"] = s.top_k
            if s.ignore_eos:
                body["ignore_eos"] = True
        if s.json_schema:
            field = self.preset.schema_field
            body[field] = ({"json": s.json_schema} if field == "structured_outputs" else s.json_schema
                           if field == "json_schema" else
                           {"type": "json_schema", "json_schema": {"name": "output", "schema": s.json_schema}})
        return body

    def stream(self, prompt, sampling: Sampling | None = None) -> Stream:
        check_prompt(prompt)
        body = self._body(sampling or Sampling(), True)
        body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
        return self._open("/completions", body, chat=False)

    def chat(self, messages: list[dict], sampling: Sampling | None = None) -> Stream:
        body = self._body(sampling or Sampling(), True)
        body["messages"] = check_messages(messages)
        return self._open("/chat/completions", body, chat=True)

    def _open(self, path: str, body: dict, chat: bool) -> Stream:
        self._require()
        t_start = time.perf_counter()
        st = Stream(iter(()), prompt_tokens=0, engine=self.name, model=self.model_name, t_start=t_start)
        st._deltas = self._sse(path, body, chat, st)
        return st

    def _sse(self, path: str, body: dict, chat: bool, st: Stream):
        import httpx

        try:
            with self.client.stream("POST", path, json=body, headers=self._headers()) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check_status(r.status_code, r.text)
                reason = None
                chunks, reported = 0, False
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise VllamaError(f"the server at {self.url} sent a malformed stream (not JSON): {data[:80]!r}") from None
                    if "error" in chunk:
                        raise VllamaError(f"the server at {self.url} failed mid-stream: {_error_text(json.dumps(chunk))}")
                    now = time.perf_counter()
                    if chunk.get("usage"):
                        st.prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                        st.usage_tokens = chunk["usage"].get("completion_tokens")
                        reported = True
                    for choice in chunk.get("choices") or []:
                        text = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                        ids = tuple(choice.get("token_ids") or ())
                        reason = choice.get("finish_reason") or reason
                        if text or ids:
                            if not reported:  # until usage comes: one token per chunk, as these servers send
                                chunks += 1
                                st.usage_tokens = chunks
                            yield Delta(text, ids, now)
                yield Delta("", (), time.perf_counter(), _reason(reason))
        except httpx.HTTPError as e:
            raise self._http_error(e) from None

    def complete(self, prompt, sampling: Sampling | None = None) -> Result:
        """One non-streaming completion request (the server's own text, for comparisons)."""
        self._require()
        check_prompt(prompt)
        body = self._body(sampling or Sampling(), False)
        body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
        t0 = time.perf_counter()
        data = self._request("POST", "/completions", body)
        choice = (data.get("choices") or [{}])[0]
        usage = data.get("usage") or {}
        st = Stream(iter([Delta(choice.get("text") or "", (), time.perf_counter(), _reason(choice.get("finish_reason")))]),
                    prompt_tokens=usage.get("prompt_tokens") or 0, engine=self.name, model=self.model_name, t_start=t0)
        st.usage_tokens = usage.get("completion_tokens")
        return st.run()

    def batch(self, prompts: list, sampling: Sampling | None = None) -> list[Result]:
        """Requests sent concurrently (at most `concurrency` at once), so the server batches them."""
        prompts = check_batch(prompts)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self.generate(p, sampling), prompts))

    def _require(self) -> None:
        if self.client is None:
            raise VllamaError("no server is connected: load(model, engine='openai', url=...) first")

    def info(self) -> dict:
        self._require()
        return {"engine": self.name, "version": self.preset.label, "model": self.model_name,
                "path": self.url, "device": f"remote ({self.preset.label})",
                "api_key": f"from ${self.api_key_env}" if self.api_key_env else "none",
                "concurrency": self.concurrency, "load_seconds": round(self.load_seconds, 3)}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __repr__(self) -> str:
        return f"<openai engine {self.model_name!r} at {self.url}>"


def _reason(r: str | None) -> str:
    return {"abort": "cancelled", None: "stop"}.get(r, r)


def _error_text(text: str) -> str:
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        msg = str(msg or data.get("detail") or text)
    except (ValueError, AttributeError):
        msg = text
    return " ".join(msg.split())[:200] or "(no detail)"
