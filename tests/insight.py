"""Checks of what a generation shows about itself (logprobs, token counts, records, embeddings),
run on every engine: llama.cpp in-process, vLLM, and a real llama.cpp server."""
import json
import math

import numpy as np

from vllama_jupyter import Sampling

PROMPT = "ROMEO:\n"
RECORD_KEYS = {"engine", "engine_version", "model", "context_length", "hardware", "vllama_jupyter", "sampling",
               "timestamp", "prompt_tokens", "output_tokens", "finish_reason"}


def check_logprobs(eng, n: int = 5) -> None:
    plain = eng.generate(PROMPT, Sampling(max_tokens=24, temperature=0.0))
    scored = eng.generate(PROMPT, Sampling(max_tokens=24, temperature=0.0, logprobs=n))
    assert plain.logprobs is None
    assert scored.text == plain.text and scored.token_ids == plain.token_ids   # logprobs change nothing
    assert len(scored.logprobs) == scored.output_tokens == 24
    assert "".join(t.token for t in scored.logprobs) == scored.text
    for t in scored.logprobs:
        assert isinstance(t.token, str) and t.logprob <= 0
        assert len(t.top) == n
        values = [lp for _, lp in t.top]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(lp) for lp in values) <= 1 + 1e-5
        assert abs(t.logprob - values[0]) < 1e-3   # greedy: the chosen token is the most likely
    # the chosen token only
    only = eng.generate(PROMPT, Sampling(max_tokens=4, temperature=0.0, logprobs=0))
    assert len(only.logprobs) == 4 and all(t.top == () for t in only.logprobs)


def check_record_and_replay(eng) -> dict:
    # a server reuses the KV cache of the prompt it saw last; the same prompt in front of both
    # runs gives both the same cache state (in-process llama.cpp evaluates each prompt afresh)
    eng.generate(PROMPT, Sampling(max_tokens=1))
    first = eng.generate(PROMPT, Sampling(max_tokens=32, temperature=0.8))
    rec = first.record
    assert RECORD_KEYS <= set(rec), set(rec)
    seed = rec["sampling"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32   # the seed used, though none was given
    assert rec["sampling"]["temperature"] == 0.8 and rec["output_tokens"] == first.output_tokens == 32
    assert rec["engine"] == eng.name and rec["model"] == eng.model_name
    assert rec["timestamp"].endswith("+00:00")
    again = eng.generate(PROMPT, Sampling.make(**rec["sampling"]))
    assert again.text == first.text and again.token_ids == first.token_ids
    other = eng.generate(PROMPT, Sampling(max_tokens=32, temperature=0.8))
    assert other.record["sampling"]["seed"] != seed
    # the sampling controls this engine takes: kept in the record, and replayed from it as saved (JSON)
    controls = {k: v for k, v in CONTROLS.items() if k in eng.capabilities().samplers}
    assert controls, eng.capabilities().samplers
    eng.generate(PROMPT, Sampling(max_tokens=1))
    tuned = eng.generate(PROMPT, Sampling(max_tokens=32, temperature=0.8, **controls))
    saved = json.loads(json.dumps(tuned.record["sampling"]))
    assert {k: saved[k] for k in controls} == {k: json.loads(json.dumps(v)) for k, v in controls.items()}
    eng.generate(PROMPT, Sampling(max_tokens=1))
    assert eng.generate(PROMPT, Sampling.make(**saved)).token_ids == tuned.token_ids
    return rec


# a value of each sampling control that changes tokens (those an engine takes are replayed)
CONTROLS = {"repetition_penalty": 1.3, "presence_penalty": 0.4, "frequency_penalty": 0.2, "min_p": 0.05,
            "typical_p": 0.9, "logit_bias": {7: -5.0}, "banned": ["JULIET"], "dry_multiplier": 0.8,
            "xtc_probability": 0.3}


def check_fit_context(eng, capsys) -> list[dict]:
    """A conversation longer than the context: the oldest turns go (never the system prompt or
    the new message), the cell is told, and what is left fits with room for the reply."""
    from vllama_jupyter.templates import fit_context

    msgs = [{"role": "system", "content": "You are Juliet."}]
    for _ in range(4):
        msgs += [{"role": "user", "content": "ROMEO: " * 100}, {"role": "assistant", "content": "JULIET: " * 100}]
    msgs.append({"role": "user", "content": "Good night."})
    fitted = fit_context(eng, msgs, Sampling(max_tokens=100))
    assert "vllama: dropped the" in capsys.readouterr().err
    assert fitted[0] == msgs[0] and fitted[-1] == msgs[-1] and len(fitted) < len(msgs)
    assert eng.count_tokens(eng.chat_prompt(fitted)) + 100 <= eng.context_length()
    return fitted


def check_embed(eng) -> None:
    texts = ["ROMEO: I am here.", "JULIET: Wherefore art thou?", "ROMEO: I am here."]
    m = eng.embed(texts)
    assert m.shape[0] == 3 and m.shape[1] >= 16 and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    assert abs(float(m[0] @ m[2]) - 1.0) < 1e-5          # cosine(x, x) = 1
    assert float(m[0] @ m[1]) < 0.999                     # different texts differ
    raw = eng.embed(texts[:1], normalize=False)
    assert not np.isclose(np.linalg.norm(raw[0]), 1.0)
    assert np.allclose(raw[0] / np.linalg.norm(raw[0]), m[0], atol=1e-5)
