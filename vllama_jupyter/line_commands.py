"""%vllama SUBCOMMAND: the line magic's subcommands (status, load, share, mcp, models, ...), each
read by its own argparse parser; VllamaMagics takes them in as LineCommands."""
from __future__ import annotations

import argparse
import json
import shlex

from . import engines, mcp_tools, servers
from .engines import selection
from .seam import IDLE_TIMEOUT_S
from .errors import VllamaError
from .hardware import hardware
from .interpolate import interpolate
from .session import get_session


class Parser(argparse.ArgumentParser):
    """A subcommand's options; a mistake is one VllamaError line that shows the usage."""

    def __init__(self, name: str, description: str):
        super().__init__(prog=f"%vllama {name}", description=description, add_help=False, exit_on_error=False)

    def one_line(self) -> str:
        return " ".join(self.format_usage().split()).removeprefix("usage: ")

    def error(self, message: str):
        raise VllamaError(f"{message}: {self.one_line()}")

    def read(self, words: list[str]):
        try:
            return self.parse_args(words)
        except argparse.ArgumentError as e:
            self.error(str(e))


def _subcommands() -> dict[str, Parser]:
    P = {}
    P["status"] = Parser("status", "engine, model, device, memory, and why this engine")
    P["hardware"] = Parser("hardware", "what was found on this machine")
    p = P["fit"] = Parser("fit", "will a model fit in memory, and the largest context that does (nothing is loaded)")
    p.add_argument("model", nargs="?")
    p.add_argument("-e", "--engine", metavar="ENGINE")
    p.add_argument("--n-ctx", type=int, metavar="N", help="context length in tokens (vLLM: max_model_len)")
    p = P["load"] = Parser("load", "load a model (path, repo id, alias, 'embedded'), or connect to a server with --url")
    p.add_argument("model", nargs="?")
    p.add_argument("-e", "--engine", metavar="ENGINE")
    p.add_argument("--n-ctx", type=int, metavar="N", help="context length in tokens")
    p.add_argument("--speculative", metavar="KIND", help="speculative decoding: ngram (prompt lookup)")
    p.add_argument("--url", metavar="URL")
    p.add_argument("--preset", metavar="PRESET")
    p.add_argument("--api-key-env", metavar="NAME")
    p = P["serve"] = Parser("serve", "start a local server on 127.0.0.1 and use it")
    p.add_argument("kind", choices=servers.KINDS)
    p.add_argument("model", nargs="?")
    p.add_argument("--api-key-env", metavar="NAME")
    p.add_argument("--no-load", action="store_true")
    p = P["share"] = Parser("share", "serve this kernel's engine to your other notebooks (they use it when they name no model)")
    p.add_argument("--stop", action="store_true", help="stop sharing")
    p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="S")
    p.add_argument("--port", type=int, metavar="PORT", help="a fixed port on 127.0.0.1 (default: a free one)")
    P["unload"] = Parser("unload", "free the engine and its memory")
    p = P["models"] = Parser("models", "models this kernel can load (embedded, $VLLAMA_MODELS or the folders given, HF cache)")
    p.add_argument("folders", nargs="*")
    p = P["bench"] = Parser("bench", "benchmark the engine")
    p.add_argument("-e", "--engine", metavar="ENGINE")
    p.add_argument("-m", "--model", metavar="MODEL")
    p.add_argument("-n", "--requests", type=int, default=16, metavar="N")
    p.add_argument("-c", "--concurrency", default="1", metavar="1,2,4")
    p.add_argument("--rate", metavar="R,...")
    p.add_argument("--max-tokens", type=int, default=64, metavar="N")
    p.add_argument("--input-len", type=int, metavar="N")
    p.add_argument("--csv", metavar="PREFIX")
    p.add_argument("--widget", action="store_true")
    p = P["tokens"] = Parser("tokens", "count the tokens of TEXT (or of the cell, in %%vllama tokens) and their share of the context")
    p.add_argument("text", nargs="*")
    P["record"] = Parser("record", "how the last output was made: engine, model SHA-256, settings with the seed used")
    p = P["mcp"] = Parser("mcp", "MCP servers whose tools cells may use: add [--name N] [--timeout S] COMMAND|URL, list, stop NAME")
    p.add_argument("action", choices=["add", "list", "stop"])
    p.add_argument("--name", metavar="N")
    p.add_argument("--timeout", type=float, default=mcp_tools.TIMEOUT.default, metavar="S")
    p.add_argument("words", nargs="*")
    p = P["lora"] = Parser("lora", "LoRA adapters on the loaded model: add PATH [--name N] [--scale S], list, remove NAME")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("--name", metavar="N")
    p.add_argument("--scale", type=float, default=1.0, metavar="S")
    p.add_argument("words", nargs="*")
    P["panel"] = Parser("panel", "the engine panel (widgets)")
    P["history"] = Parser("history", "the chat conversation so far")
    P["reset"] = Parser("reset", "clear the chat conversation")
    P["help"] = Parser("help", "this text")
    return P


SUBCOMMANDS = _subcommands()
LINE_HELP = "\n".join(["%vllama SUBCOMMAND — manage the kernel's engine"]
                      + [f"  {p.one_line()}\n      {p.description}"
                         for p in SUBCOMMANDS.values()]
                      + ["%%vllama [options] — the cell body is the prompt; %%vllama? lists the options."])


def words_of(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise VllamaError(f"could not read the options ({e}): check the quotes") from None


def _command_last(words: list[str], with_value: tuple) -> list[str]:
    """`add --name N python -m server` read as `--name N add -- python -m server`: the command's
    own options stay its own."""
    i = 1
    while i < len(words) and words[i].startswith("-") and words[i] != "--":
        i += 2 if words[i] in with_value else 1
    rest = words[i + 1:] if i < len(words) and words[i] == "--" else words[i:]
    return words[1:i] + words[:1] + ["--"] + rest if words else words


def _fit(session, row: dict) -> str:
    """' · 253.1 MiB: fits, up to 32,768 tokens' for a GGUF on disk (nothing is loaded or fetched)."""
    if "gguf" not in row["forms"] or row["where"] not in ("embedded", "local", "HF cache"):
        return ""
    try:
        p = session.fit(row["model"], engine="llamacpp")
    except VllamaError:
        return ""
    return f" · {p.brief()}"


class LineCommands:
    """The subcommands of %vllama, as methods of the magics (their traits: model, engine, ...)."""

    def _line(self, line: str):
        if line.split(None, 1)[:1] == ["tokens"]:   # the text as typed: quotes and all
            return self._tokens(line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "")
        words = words_of(line)
        cmd, rest = (words[0].lower(), words[1:]) if words else ("help", [])
        if cmd not in SUBCOMMANDS:
            raise VllamaError(f"unknown subcommand {cmd!r}: use one of {', '.join(SUBCOMMANDS)} (%vllama help)")
        if cmd == "mcp":
            rest = _command_last(rest, ("--name", "--timeout"))
        return getattr(self, f"_cmd_{cmd}")(SUBCOMMANDS[cmd].read(rest))

    def _cmd_help(self, a):
        print(LINE_HELP)

    def _cmd_status(self, a):
        st = get_session().status()
        if not st["loaded"]:
            print(f"no model loaded ({st['state']})\nwould use: {st['would_use']}")
            return
        if "dead" in st:
            print(f"engine: {st['engine']} — engine died\nmodel:  {st['model']}\nstate:  {st['dead']}")
            return
        facts = [st["state"]]
        if "context_length" in st:
            facts.append(f"context {st['context_length']} tokens")
        if "rss_bytes" in st:
            facts.append(f"process memory {st['rss_bytes'] / 2**20:.0f} MB")
        if "api_key" in st:
            facts.append(f"API key {st['api_key']}")
        if "images" in st:
            facts.append(f"images through {st['images']}")
        if st.get("adapters"):
            facts.append("LoRA " + ", ".join(f"{a['name']} (scale {a['scale']:g})" for a in st["adapters"]))
        if st.get("parallel", 1) > 1:
            facts.append(f"decodes up to {st['parallel']} requests at once")
        if "shared" in st:
            n = st["shared"]["clients"]
            facts.append(f"shared at {st['shared']['url']} with {n} other kernel{'s' if n != 1 else ''}")
        print(f"engine: {st['engine']} {st.get('version', '')} on {st.get('device', '?')}\n"
              f"model:  {st['model']} ({st.get('path', '')})\n"
              f"state:  {' · '.join(facts)}\n"
              f"why:    {st['why']}")
        if mcp_tools.SERVERS:
            print("mcp:    " + ", ".join(f"{s.name} ({s.n_tools} tools)" if s.alive else f"{s.name} (stopped)"
                                         for s in mcp_tools.SERVERS.values()))

    def _cmd_hardware(self, a):
        print(hardware().summary())

    def _cmd_fit(self, a):
        print(get_session().fit(a.model or self.model or None, a.n_ctx, a.engine))

    def _cmd_load(self, a):
        remote = {k: v for k, v in (("url", a.url), ("preset", a.preset), ("api_key_env", a.api_key_env)) if v}
        if remote and a.engine is not None and engines.kind(a.engine).in_process:
            raise VllamaError("--url, --preset and --api-key-env go with --engine openai")
        session = get_session()
        session.config_engine = None if self.engine == "auto" else self.engine
        opts, a.engine = dict(remote), (engines.REMOTE if remote else a.engine)
        if a.n_ctx is not None or a.speculative is not None:
            kind = engines.kind(a.engine if remote else selection.choose(
                hardware(), override=a.engine, config=session.config_engine).engine)
            if not kind.in_process:
                flag = "--n-ctx" if a.n_ctx is not None else "--speculative"
                raise VllamaError(f"{flag} is set on the server, not here: drop it for --engine openai")
            if a.n_ctx is not None:
                opts[kind.context_option] = a.n_ctx
            if a.speculative is not None:
                opts["speculative"] = a.speculative
        session.load(a.model or self.model or None, a.engine, **opts)
        self._cmd_status(a)

    def _cmd_serve(self, a):
        opts = {"api_key_env": a.api_key_env} if a.api_key_env else {}
        if a.kind == "max":
            print("starting MAX (its first start compiles the model: minutes on a CPU; later ones take seconds)", flush=True)
        server = get_session().serve(a.kind, a.model, load=not a.no_load, **opts)
        print(f"{server.kind} server for {server.model} at {server.url}")

    def _cmd_bench(self, a):
        from IPython.display import display

        from . import bench
        if a.widget:
            from .widgets import bench_widget
            return display(bench_widget())
        try:
            conc = [int(x) for x in a.concurrency.split(",")]
            rates = [float(x) for x in a.rate.split(",")] if a.rate else None
        except ValueError:
            raise VllamaError("--concurrency and --rate take comma-separated numbers, e.g. -c 1,2,4") from None
        res = bench.run(engine=a.engine, model=a.model, num_requests=a.requests, concurrency=conc,
                        request_rate=rates, max_tokens=a.max_tokens, input_len=a.input_len)
        if a.csv:
            print("wrote " + ", ".join(res.to_csv(a.csv)))
        display(res)

    def _tokens(self, text: str | None):
        if text is None:
            raise VllamaError("%%vllama tokens takes no options: the cell body is the text to count")
        ns = self.shell.user_ns if self.shell is not None else {}
        text = interpolate(text, ns)
        if not text.strip():
            raise VllamaError("nothing to count: write %vllama tokens TEXT, or the text below %%vllama tokens")
        session = get_session()
        n, name = session.count_tokens(text), session.loaded.ref.name
        try:
            ctx = session.engine.context_length()
        except VllamaError:
            print(f"{n:,} tokens · {name} (the context length is not known)")
            return
        print(f"{n:,} tokens · {n / ctx:.1%} of the {ctx:,}-token context · {name}")

    def _cmd_record(self, a):
        last = get_session().last
        if last is None:
            print("(no output yet: the record of the next %%vllama cell or generate() shows here)")
            return
        print(json.dumps(last.record, indent=1, ensure_ascii=False))

    def _cmd_mcp(self, a):
        if a.action == "list":
            print("\n".join(mcp_tools.listing()) or "(no MCP server: %vllama mcp add [--name N] COMMAND|URL)")
        elif a.action == "stop":
            if len(a.words) != 1:
                raise VllamaError(f"%vllama mcp stop takes one server's name (running: {', '.join(mcp_tools.SERVERS) or 'none'})")
            mcp_tools.stop(a.words[0])
            print(f"stopped {a.words[0]}")
        else:
            if not a.words:
                raise VllamaError("%vllama mcp add needs the server's command or URL, e.g. %vllama mcp add python -m mcp_server_time")
            server = mcp_tools.connect(a.words[0] if len(a.words) == 1 else a.words, a.name, timeout=a.timeout)
            print(f"{server!r}\ntools: {', '.join(t.name for t in server.mcp_tools())} · use them with %%vllama --mcp {server.name}")

    def _cmd_lora(self, a):
        session = get_session()
        if a.action == "list":
            from .engines.lora import listing

            print(listing(session.lora_list()))
            return
        if len(a.words) != 1:
            raise VllamaError(f"%vllama lora {a.action} takes one " + ("path: %vllama lora add PATH [--name N] [--scale S]"
                                                                      if a.action == "add" else "adapter's name"))
        if a.action == "remove":
            session.lora_remove(a.words[0])
            print(f"removed {a.words[0]}")
            return
        added = session.lora_add(a.words[0], a.name, a.scale)
        print(f"added {added['name']} (scale {added['scale']:g}, sha256 {added['sha256'][:12]}…) · use it with "
              f"%%vllama --lora {added['name']}")

    def _cmd_panel(self, a):
        from IPython.display import display
        from .widgets import panel
        display(panel(self.throttle))

    def _cmd_share(self, a):
        session = get_session()
        if a.stop:
            session.stop_sharing()
            print("not shared any more")
            return
        info = session.share(a.idle_timeout, a.port)
        print(f"sharing {info['engine']} · {info['model']} at {info['url']} (token in {info['file']}, readable by you only)\n"
              "notebooks of this user that name no model now use it; it stops with this kernel, on unload, "
              f"or after {info['idle_timeout_s']:.0f} s without requests\n{info['how_to_use']}")

    def _cmd_unload(self, a):
        get_session().unload()
        print("unloaded")

    def _cmd_models(self, a):
        from .models import list_models
        session = get_session()
        for row in list_models(a.folders or None):
            print(f"{row['model']}  [{row['where']}; {row['forms']}]{_fit(session, row)}")

    def _cmd_history(self, a):
        hist = get_session().history
        if not hist:
            print("(no conversation yet: use %%vllama --chat)")
        for m in hist:
            print(f"{m['role']}: {m['content']}")

    def _cmd_reset(self, a):
        get_session().history.clear()
        print("conversation cleared")
