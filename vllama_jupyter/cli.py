"""`vllama PROMPT`: stream a completion in the terminal (the same engine and session as in Jupyter)."""
from __future__ import annotations

import argparse
import sys

from .errors import VllamaError
from . import options
from .sampling import Sampling


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllama", description="Stream a completion from a local LLM.")
    p.add_argument("prompt", nargs="?", help="the prompt (default: read standard input)")
    p.add_argument("-m", "--model", help="path, Hugging Face repo id or alias (default: embedded model)")
    p.add_argument("-e", "--engine", help="llamacpp, vllm or openai (default: chosen from the hardware)")
    options.add_arguments(p)
    p.add_argument("-s", "--system", help="system prompt: answer the prompt as a chat message")
    p.add_argument("--image", action="append", metavar="FILE", help="show a vision model this image file (repeatable)")
    p.add_argument("--hardware", action="store_true", help="print what was found on this machine and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    import vllama_jupyter as v
    from .streaming import Renderer

    try:
        if a.hardware:
            print(v.hardware().summary())
            return 0
        prompt = a.prompt if a.prompt is not None else sys.stdin.read()
        s = Sampling.make(**{k: (None if x is None else x) for k, x in options.from_args(a).items()})
        st = v.load(a.model, a.engine)
        print(f"[{st['engine']} · {st['model']} · {st['why']}]", file=sys.stderr)
        chat = a.system is not None or a.image or options.is_chat(s)
        if not chat:
            sys.stdout.write(prompt)
        stream = v.chat(prompt, s, system=a.system, keep=False, images=a.image) if chat else v.stream(prompt, s)
        result = Renderer(jupyter=False).run(stream)
        print(f"— {result.stats_line()}", file=sys.stderr)
        return 0
    except VllamaError as e:
        print(f"vllama: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        v.unload()


if __name__ == "__main__":
    sys.exit(main())
