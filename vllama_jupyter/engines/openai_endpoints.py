"""The openai engine's requests beside generation: token counts from a server's tokenize
endpoint, and embeddings from /v1/embeddings."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

from .base import as_matrix, check_prompt, check_texts

# (path at the server's root, the field holding the text): vLLM, llama.cpp server, llama-cpp-python
TOKENIZE_ENDPOINTS = (("/tokenize", "prompt"), ("/tokenize", "content"), ("/extras/tokenize", "input"))


class Endpoints:
    """Mixed into the openai Engine (its client, url, headers and error helpers)."""

    def tokenize(self, text: str) -> list[int]:
        """Token ids from the server's tokenize endpoint: vLLM's /tokenize, the llama.cpp server's
        /tokenize, llama-cpp-python's /extras/tokenize (the first that answers is remembered)."""
        self._require()
        check_prompt(text)
        tried = [self._tokenizer] if self._tokenizer else TOKENIZE_ENDPOINTS
        for path, field in tried:
            body = {field: text, "model": self.model_name}
            r = self._post_root(path, body)
            if r is None:
                continue
            ids = r.get("tokens") if isinstance(r, dict) else None
            if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise self._bad(f"a {path} answer without a list of token ids")
            self._tokenizer = (path, field)
            return ids
        raise self._fail(f"the server at {self.url} ({self.preset.label}) has no tokenize endpoint, so its token "
                         "counts are not known: load the model in-process (llamacpp or vllm) to count tokens")

    def _post_root(self, path: str, body: dict):
        """POST to the server's root (next to /v1); None when it has no such endpoint."""
        import httpx

        root = self.url.removesuffix("/").removesuffix("/v1")
        try:
            r = self.client.post(root + path, json=body, headers=self._headers())
        except httpx.HTTPError as e:
            raise self._http_error(e) from None
        if r.status_code in (404, 405, 400, 422):
            return None
        self._check_status(r.status_code, r.text)
        try:
            return r.json()
        except ValueError:
            raise self._fail(f"the server at {self.url} answered {path} with something that is not JSON") from None

    def embed(self, texts, normalize: bool = True):
        """Embeddings from the server's /v1/embeddings: one request per text, sent concurrently
        (the server batches them; some servers mix up several texts of one request)."""
        self._require()
        items = check_texts(texts)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            vecs = list(pool.map(self._embed_one, items))
        if len({len(v) for v in vecs}) != 1:
            raise self._fail(f"the server at {self.url} sent embeddings of different lengths")
        return as_matrix(vecs, normalize)

    def _embed_one(self, text: str) -> list:
        data = self._request("POST", "/embeddings", {"model": self.model_name, "input": text})
        rows = data.get("data") if isinstance(data, dict) else None
        vec = pooled(rows[0].get("embedding")) if isinstance(rows, list) and len(rows) == 1 \
            and isinstance(rows[0], dict) else None
        if vec is None:
            raise self._fail(f"the server at {self.url} sent malformed embeddings: "
                             "no data[0].embedding list of numbers")
        return vec


def pooled(v) -> list | None:
    """One vector: as sent, or the mean of per-token vectors (llama-cpp-python's server sends
    those for models without a pooling type). None when it is not numbers."""
    def numbers(x):
        return isinstance(x, list) and x and all(isinstance(n, (int, float)) and not isinstance(n, bool)
                                                 and math.isfinite(n) for n in x)
    if numbers(v):
        return v
    if isinstance(v, list) and v and all(numbers(x) for x in v) and len({len(x) for x in v}) == 1:
        return [sum(col) / len(v) for col in zip(*v)]
    return None
