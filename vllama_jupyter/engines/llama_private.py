"""Every use of llama-cpp-python's private attributes, in one place. Our token loop, logprobs,
grammar probe and image evaluation need the raw context, vocabulary, batch and sampler that its
`Llama` class keeps to itself. The versions the tests ran on bound the requirement in
pyproject.toml; `check` says in one line which attribute moved when a new release breaks one."""
from __future__ import annotations

from ..errors import VllamaError

TESTED = "0.3.36"   # the newest llama-cpp-python the tests ran on (pyproject.toml's upper bound)

# attribute path on a Llama -> what we use it for
USED = {
    "_ctx.ctx": "the raw llama_context: logits of a row (logprobs, greedy pick), mtmd's image evaluation",
    "_ctx.decode": "one llama_decode of our own batch (the token loop's steps)",
    "_ctx.kv_cache_seq_rm": "dropping the KV cells of a rejected draft",
    "_ctx.kv_cache_clear": "an empty cache before an image prompt",
    "_batch.set_batch": "filling the batch our loop decodes",
    "_sampler.sample": "the request's sampler chain (and grammar) on a logits row",
    "_model.vocab": "the raw llama_vocab: end-of-generation tokens, the grammar probe",
}


def check(llm) -> None:
    """One line naming the first private attribute this llama-cpp-python no longer has."""
    import llama_cpp

    for path, use in USED.items():
        obj = llm
        for part in path.split("."):
            if part == "_sampler" and getattr(obj, part, None) is None:
                break   # made by the first generate(); its class is checked below
            if not hasattr(obj, part):
                raise VllamaError(f"llama-cpp-python {llama_cpp.__version__} has no Llama.{path} (used for {use}): "
                                  f"install llama-cpp-python<={TESTED}, the newest version vllama was tested on")
            obj = getattr(obj, part)
    if not hasattr(llama_cpp._internals.LlamaSampler, "sample"):
        raise VllamaError(f"llama-cpp-python {llama_cpp.__version__} has no LlamaSampler.sample: "
                          f"install llama-cpp-python<={TESTED}")


def context(llm):
    """The raw llama_context pointer."""
    return llm._ctx.ctx


def vocab(llm):
    """The raw llama_vocab pointer."""
    return llm._model.vocab


def sample(llm, row: int) -> int:
    """A token from logits row `row`, by the sampler of the request llm.generate() started."""
    return llm._sampler.sample(llm._ctx, row)


def decode(llm, tokens, n_past: int, logits_all: bool) -> None:
    """Evaluate `tokens` at positions n_past..., with logits for every one or only the last."""
    llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=logits_all)
    llm._ctx.decode(llm._batch)


def forget_from(llm, pos: int) -> None:
    """Drop the KV cells from position `pos` on (all sequences)."""
    llm._ctx.kv_cache_seq_rm(-1, pos, -1)


def clear(llm) -> None:
    """Empty the KV cache."""
    llm._ctx.kv_cache_clear()
