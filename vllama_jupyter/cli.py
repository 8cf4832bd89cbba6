"""`vllama PROMPT`: stream a completion in the terminal (the same engine and session as in Jupyter)."""
from __future__ import annotations

import argparse
import sys

from .errors import VllamaError
from .sampling import Sampling


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vllama", description="Stream a completion from a local LLM.")
    p.add_argument("prompt", nargs="?", help="the prompt (default: read standard input)")
    p.add_argument("-m", "--model", help="path, Hugging Face repo id or alias (default: embedded model)")
    p.add_argument("-e", "--engine", help="llamacpp, vllm or openai (default: chosen from the hardware)")
    p.add_argument("--max-tokens", type=int, default=Sampling.max_tokens)
    p.add_argument("-t", "--temperature", type=float, default=Sampling.temperature)
    p.add_argument("--seed", type=int)
    p.add_argument("--hardware", action="store_true", help="print what was found on this machine and exit")
    a = p.parse_args(argv)
    import vllama_jupyter as v
    from .streaming import Renderer

    try:
        if a.hardware:
            print(v.hardware().summary())
            return 0
        prompt = a.prompt if a.prompt is not None else sys.stdin.read()
        st = v.load(a.model, a.engine)
        print(f"[{st['engine']} · {st['model']} · {st['why']}]", file=sys.stderr)
        sys.stdout.write(prompt)
        result = Renderer(jupyter=False).run(v.stream(prompt, max_tokens=a.max_tokens,
                                                       temperature=a.temperature, seed=a.seed))
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
