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
    "_init_sampler": "generate() starting with our sampler chain (llamacpp_sampler.Chain)",
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
    if not {"_grammar", "_root"} <= set(vars(llama_cpp.llama_grammar.LlamaGrammar(_grammar='root ::= "a"'))):
        raise VllamaError(f"llama-cpp-python {llama_cpp.__version__} keeps a grammar's text elsewhere than "
                          f"LlamaGrammar._grammar/_root: install llama-cpp-python<={TESTED}")
    if not hasattr(llama_cpp._internals.LlamaSampler, "sample"):
        raise VllamaError(f"llama-cpp-python {llama_cpp.__version__} has no LlamaSampler.sample: "
                          f"install llama-cpp-python<={TESTED}")


def context(llm):
    """The raw llama_context pointer."""
    return llm._ctx.ctx


def vocab(llm):
    """The raw llama_vocab pointer."""
    return llm._model.vocab


def use_sampler(llm, chain) -> None:
    """generate() draws the prompt's first token with `chain` (llama-cpp-python would build its own,
    without DRY, XTC, logit bias, min_tokens or banned text), and so does our loop after it.
    None: llama-cpp-python's own again."""
    if chain is None:
        llm.__dict__.pop("_init_sampler", None)
        llm._sampler = None
    else:
        llm._init_sampler = lambda **_: chain


def grammar_source(grammar) -> tuple[bytes, bytes]:
    """A LlamaGrammar's GBNF text and root rule, as llama.cpp's grammar sampler takes them."""
    return grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")


def sample(llm, row: int) -> int:
    """A token from logits row `row`, by the sampler of the request llm.generate() started."""
    return llm._sampler.sample(llm._ctx, row)


def decode(llm, tokens, n_past: int, logits_all: bool) -> None:
    """Evaluate `tokens` at positions n_past..., with logits for every one or only the last."""
    llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=logits_all)
    llm._ctx.decode(llm._batch)


def sequence_state(llm) -> bytes:
    """The KV cells of the context's one sequence, as llama.cpp saves them (llama_state_seq_*)."""
    import ctypes

    import llama_cpp

    ctx = context(llm)
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    return bytes(buf[:llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)])


def forget_from(llm, pos: int) -> None:
    """Drop the KV cells from position `pos` on (all sequences)."""
    llm._ctx.kv_cache_seq_rm(-1, pos, -1)


def clear(llm) -> None:
    """Empty the KV cache."""
    llm._ctx.kv_cache_clear()
