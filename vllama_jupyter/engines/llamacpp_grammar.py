"""Grammars for the llama.cpp engine: JSON schemas through llama-cpp-python's converter, GBNF
text checked by llama.cpp's own parser before a request starts."""
from __future__ import annotations

import json
import os
import sys
import tempfile

from ..errors import VllamaError
from . import llama_private as private


def from_schema(schema: dict):
    """A llama.cpp grammar for a JSON schema."""
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
        # JSON strings may not hold raw control characters (llama.cpp's own converter agrees)
        gbnf = gbnf.replace(r'char ::= [^"\\]', r'char ::= [^"\\\x7F\x00-\x1F]')
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except Exception as e:
        raise VllamaError(f"this JSON schema cannot be turned into a grammar: {e}") from None


def from_gbnf(llm, text: str):
    """A llama.cpp grammar from GBNF text, parsed first so a bad one fails before anything runs."""
    from llama_cpp.llama_grammar import LlamaGrammar

    import llama_cpp

    # parse it here, so a bad grammar fails before anything runs; the parser writes its
    # complaint to the C stderr, which is caught for the message
    with tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            probe = llama_cpp.llama_sampler_init_grammar(private.vocab(llm), text.encode("utf-8"), b"root")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        why = " ".join(err.read().decode("utf-8", "replace").split())[:160]
    if not probe:
        raise VllamaError(f"llama.cpp cannot read this grammar ({why or 'failed to parse'}): write it in GBNF, "
                          "starting with root ::= ...")
    llama_cpp.llama_sampler_free(probe)
    return LlamaGrammar.from_string(text, verbose=False)
