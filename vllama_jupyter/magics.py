"""%%vllama (prompt a cell) and %vllama (manage the kernel's engine: line_commands)."""
from __future__ import annotations

import json
import re

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Float, TraitError, Unicode, validate

from . import mcp_tools, options
from .errors import VllamaError
from .interpolate import interpolate
from .line_commands import LineCommands, words_of
from .sampling import Sampling
from .session import get_session
from .streaming import FORMATS, Renderer
from .tools import MAX_ROUNDS


def _unescape(text: str) -> str:
    """\\n, \\t and \\\\ as typed in an option mean newline, tab and backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


@magics_class
class VllamaMagics(LineCommands, Magics):
    """Magics for prompting the kernel's local LLM. Configure with `%config VllamaMagics.<trait> = ...`."""

    model = Unicode("", help="Model loaded when none is named (path, repo id, alias; '' = embedded).").tag(config=True)
    engine = Unicode("auto", help="Engine: auto, llamacpp, vllm or openai.").tag(config=True)
    max_tokens = options.trait("max_tokens")
    temperature = options.trait("temperature")
    top_p = options.trait("top_p")
    repetition_penalty = options.trait("repetition_penalty")
    min_p = options.trait("min_p")
    format = Unicode("text", help="Default --format: text, markdown, code, json or tokens.").tag(config=True)
    throttle = Float(0.1, help="Seconds between display updates while streaming.").tag(config=True)
    show_stats = Bool(True, help="Print the stats line after each generation.").tag(config=True)

    @validate(*options.CONFIGURED)
    def _valid(self, proposal):
        try:
            return options.BY_NAME[proposal["trait"].name].check(proposal["value"])
        except VllamaError as e:
            raise TraitError(str(e)) from None   # traitlets keeps the old value

    @magic_arguments()
    @argument("-m", "--model", help="model to use (loads it if another is loaded)")
    @argument("-e", "--engine", help="engine: llamacpp, vllm, openai")
    @options.decorate
    @argument("-s", "--system", help="system prompt (formats the prompt as a chat)")
    @argument("--chat", action="store_true", help="continue the kernel's conversation")
    @argument("--image", action="append", metavar="IMG", help="show the model an image: a variable (figure, PIL image, "
              "array, bytes), Out[n], or a file path (repeatable)")
    @argument("--tools", metavar="F,G", help="notebook functions the model may call (names, comma-separated)")
    @argument("--mcp", metavar="A,B", help="MCP servers whose tools the model may call (their names: %%vllama mcp list)")
    @argument("--run-tools", action="store_true", help="run the calls the model makes and send it the results")
    @argument("--max-rounds", type=int, default=MAX_ROUNDS, metavar="N", help="most rounds of tool calls (default 8)")
    @argument("-f", "--format", choices=FORMATS, help="how to show the output")
    @argument("-o", "--out", help="store the Result in this variable")
    @argument("--no-stream", action="store_true", help="show the output only when done")
    @argument("--quiet", action="store_true", help="no stats line")
    @argument("--no-interpolate", action="store_true", help="leave {name} in the prompt as written")
    @line_cell_magic
    def vllama(self, line: str, cell: str | None = None):
        """%%vllama: the cell is the prompt. %vllama SUBCOMMAND: see `%vllama help`.
        Errors fail the cell with one line (no traceback); an interrupt keeps the partial text."""
        if cell is None:
            return self._line(line)
        if line.split(None, 1)[:1] == ["tokens"]:
            return self._tokens(cell if line.strip() == "tokens" else None)
        args = self.vllama.parser.parse_args(words_of(line))
        return self._cell(args, cell)

    # -- the cell magic -------------------------------------------------------------------
    def _cell(self, args, cell: str):
        ns = self.shell.user_ns if self.shell is not None else {}
        if args.out is not None and not args.out.isidentifier():
            raise VllamaError(f"-o/--out needs a variable name, not {args.out!r}")
        prompt = cell if args.no_interpolate else interpolate(cell, ns)
        if not prompt.strip():
            raise VllamaError("the cell is empty: write a prompt below %%vllama")
        fmt = args.format or ("json" if args.json_schema else self.format)
        given = options.from_args(args)
        for name in options.CONFIGURED:   # %config defaults
            if given[name] is None:
                given[name] = getattr(self, name)
        given["stop"] = tuple(_unescape(x) for x in given["stop"] or ())
        if given["logprobs"] is None and fmt == "tokens":
            given["logprobs"] = 5
        if args.json_schema:
            given["json_schema"] = self._schema(args.json_schema, ns)
        if args.grammar and args.grammar.isidentifier():
            if not isinstance(ns.get(args.grammar), str):
                raise VllamaError(f"--grammar {args.grammar!r} names no variable holding GBNF text")
            given["grammar"] = ns[args.grammar]
        s = Sampling.make(**given)
        tools = ((self._tools(args.tools, ns) if args.tools else []) + (mcp_tools.by_names(args.mcp) if args.mcp else [])) or None
        images = [self._image(x, ns) for x in args.image] if args.image else None
        if args.run_tools and not tools:
            raise VllamaError("--run-tools needs --tools f,g (notebook functions) or --mcp NAME (an MCP server's tools)")
        session = get_session()
        session.config_engine = None if self.engine == "auto" else self.engine
        session.ensure(args.model if args.model is not None else (self.model or None), args.engine)
        renderer = Renderer(fmt=fmt, throttle=self.throttle, live=not args.no_stream)
        stats = self.show_stats and not args.quiet

        def render(stream):
            try:
                result = renderer.run(stream)
            except KeyboardInterrupt:
                result = stream.result
            if stats:
                print(f"— {result.stats_line()}")
            renderer.handle = None   # the next round gets its own display
            return result

        if args.chat or args.system or tools or images or options.is_chat(given):
            result = session.chat_loop(prompt.strip(), s, system=args.system, keep=args.chat, tools=tools,
                                       run_tools=args.run_tools, render=render, show=print, max_rounds=args.max_rounds,
                                       images=images)
        else:
            result = render(session.stream(prompt, s))
        if args.out:
            ns[args.out] = result

    @staticmethod
    def _tools(spec: str, ns: dict) -> list:
        funcs = []
        for name in (x.strip() for x in spec.split(",")):
            if not name.isidentifier() or name not in ns:
                raise VllamaError(f"--tools names notebook functions: {name!r} is not a variable here")
            funcs.append(ns[name])
        return funcs

    @staticmethod
    def _image(spec: str, ns: dict):
        """--image's object: a variable, Out[n] (or _n), or a file path."""
        import os

        m = re.fullmatch(r"Out\[(\d+)\]|_(\d+)", spec)
        if m:
            n = int(m.group(1) or m.group(2))
            out = ns.get("Out", {})
            if n not in out:
                raise VllamaError(f"--image {spec}: cell {n} has no output (Out holds {sorted(out)[-5:] or 'nothing'})")
            return out[n]
        if spec.isidentifier():
            if spec in ns:
                return ns[spec]
            if not os.path.exists(spec):
                raise VllamaError(f"--image {spec!r} names no variable here and no file: make the figure or image "
                                  "first, or give a file path")
        from .images import as_image

        return as_image(spec, f"--image {spec}")

    @staticmethod
    def _schema(spec: str, ns: dict) -> dict:
        value = ns.get(spec, spec) if spec.isidentifier() else spec
        if hasattr(value, "model_json_schema"):
            value = value.model_json_schema()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise VllamaError(f"--json-schema {spec!r} is neither a variable holding a schema nor JSON text") from None
        if not isinstance(value, dict):
            raise VllamaError(f"--json-schema must be a JSON object schema, got {type(value).__name__}")
        return value
