"""Every generation option, declared once: name, type, range, help, its flags and its OpenAI
field. `Sampling`, the %%vllama arguments, the `vllama` CLI, the panel's controls, %config traits,
the share server's request mapping and the openai engine's request body are all made from OPTIONS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import VllamaError

MAX_LOGPROBS = 20
THINK_LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str            # int, float, bool, text, texts, schema, think, bias
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False   # the range excludes `low`
    optional: bool = False   # None allowed (meaning: off / the engine's default)
    wire: str | None = None  # its field in an OpenAI request body (None: mapped by hand below)
    panel: str | None = None  # short label of its panel control (None: not in the panel)

    def check(self, v: Any) -> Any:
        """`v` as this option holds it, or one VllamaError line."""
        if v is None and self.optional:
            return None
        bad = lambda what: VllamaError(f"{self.name} must be {what} (got {v!r}){self._hint()}")  # noqa: E731
        if self.kind in ("int", "float"):
            ok_type = int if self.kind == "int" else (int, float)
            if isinstance(v, bool) or not isinstance(v, ok_type):
                raise bad(self._range_words())
            above = self.low is None or (v > self.low if self.low_open else v >= self.low)
            if not (above and (self.high is None or v <= self.high)):   # NaN fails both
                raise bad(self._range_words())
            return float(v) if self.kind == "float" else v
        if self.kind == "bool":
            if not isinstance(v, bool):
                raise bad("True or False")
            return v
        if self.kind == "texts":
            items = (v,) if isinstance(v, str) else v
            if not isinstance(items, (list, tuple)) or any(not isinstance(x, str) or not x for x in items):
                raise VllamaError(f"each {self.name} sequence must be a non-empty string")
            return tuple(items)
        if self.kind == "schema":
            if not isinstance(v, dict):
                raise VllamaError(f"{self.name} must be a dict holding a JSON schema (got {type(v).__name__})")
            return v
        if self.kind == "text":
            if not isinstance(v, str) or not v.strip():
                raise bad("non-empty text")
            return v
        if self.kind == "think":
            if isinstance(v, bool) or v in THINK_LEVELS:
                return v
            raise bad(f"True, False or one of {', '.join(THINK_LEVELS)}")
        if self.kind == "bias":
            return _bias(v)
        raise AssertionError(self.kind)

    def _range_words(self) -> str:
        what = "a whole number" if self.kind == "int" else "a number"
        g = (lambda x: str(int(x))) if self.kind == "int" else (lambda x: f"{x:g}")
        if self.low is not None and self.high is not None:
            if self.low_open:
                return f"in ({g(self.low)}, {g(self.high)}]"
            return f"{what} from {g(self.low)} to {g(self.high)}" if self.kind == "int" else \
                f"between {g(self.low)} and {g(self.high)}"
        if self.low == 0 and self.low_open:
            return "a positive number"
        if self.low is not None:
            return f"{what} >= {g(self.low)}" if not self.low_open else f"{what} > {g(self.low)}"
        return what

    def _hint(self) -> str:
        return f": {self.help}" if self.kind in ("int", "float") else ""


OPTIONS: tuple[Option, ...] = (
    Option("max_tokens", "int", 256, "most tokens to generate (thinking included)", ("--max-tokens",), low=1,
           wire="max_tokens", panel="Max tokens"),
    Option("temperature", "float", 0.8, "0 means greedy", ("-t", "--temperature"), low=0, high=2,
           wire="temperature", panel="Temperature"),
    Option("top_p", "float", 0.95, "nucleus sampling", ("--top-p",), low=0, high=1, low_open=True,
           wire="top_p", panel="Top-p"),
    Option("top_k", "int", 40, "0 means off", ("--top-k",), low=0, wire="top_k"),
    Option("seed", "int", None, "repeatable sampling", ("--seed",), low=0, high=2**32 - 1, optional=True,
           wire="seed", panel="Seed"),
    Option("stop", "texts", (), "stop sequence (repeatable)", ("--stop",), wire="stop"),
    Option("ignore_eos", "bool", False, "keep going past end-of-text (benchmarks)", ("--ignore-eos",),
           wire="ignore_eos"),
    Option("json_schema", "schema", None, "constrain output to this JSON schema (a variable name or JSON text)",
           ("--json-schema",), optional=True),
    Option("grammar", "text", None, "constrain output to this GBNF grammar (a variable name or the grammar text)",
           ("--grammar",), optional=True),
    Option("logprobs", "int", None, "0-20: each token's log-probability and N alternatives", ("--logprobs",),
           low=0, high=MAX_LOGPROBS, optional=True, panel="Logprobs"),
    Option("think", "think", None, "think before answering: True/False or low/medium/high (the model's switch)",
           ("--think",), optional=True, panel="Think"),
    Option("max_thinking", "int", None, "after N thinking tokens, close the thought and answer",
           ("--max-thinking",), low=1, optional=True, panel="Max thinking"),
    Option("lora", "text", None, "a LoRA adapter added with v.lora.add, by its name (None: the base model)",
           ("--lora",), optional=True, wire="lora", panel="LoRA"),
    Option("tool_choice", "text", None, "auto, none, required, or a tool's name (required/name force a call)",
           ("--tool-choice",), optional=True),
    # the sampling controls (SAMPLERS below): each one's default is neutral, as in vLLM and the OpenAI API
    Option("repetition_penalty", "float", 1.0, "above 1 makes tokens already seen less likely (1 means off)",
           ("--repetition-penalty", "--repeat-penalty"), low=0, high=2, low_open=True, wire="repetition_penalty",
           panel="Repetition penalty"),
    Option("repeat_last_n", "int", None, "tokens the penalties look back over (0 off, -1 the whole context; "
           "llama.cpp's default 64)", ("--repeat-last-n",), low=-1, optional=True, wire="repeat_last_n"),
    Option("presence_penalty", "float", 0.0, "subtracted from each token already generated", ("--presence-penalty",),
           low=-2, high=2, wire="presence_penalty", panel="Presence penalty"),
    Option("frequency_penalty", "float", 0.0, "subtracted once per time a token was generated",
           ("--frequency-penalty",), low=-2, high=2, wire="frequency_penalty", panel="Frequency penalty"),
    Option("min_p", "float", 0.0, "drop tokens less likely than min_p x the likeliest (0 means off)", ("--min-p",),
           low=0, high=1, wire="min_p", panel="Min-p"),
    Option("typical_p", "float", 1.0, "locally typical sampling (1 means off)", ("--typical-p",), low=0, high=1,
           low_open=True, wire="typical_p"),
    Option("logit_bias", "bias", None, "added to a token's logit, -100 bans it, 100 forces it: {token: bias}, "
           "a token as its id or its text (--logit-bias TOKEN=BIAS, repeatable)", ("--logit-bias",), optional=True,
           wire="logit_bias"),
    Option("min_tokens", "int", 0, "tokens to generate before the end of text is allowed", ("--min-tokens",), low=0,
           wire="min_tokens"),
    Option("banned", "texts", (), "text never to generate (repeatable)", ("--ban",), wire="bad_words"),
    Option("dry_multiplier", "float", 0.0, "DRY: penalise tokens that extend a repeated run (0 means off; 0.8 is "
           "a common start)", ("--dry",), low=0, high=10, wire="dry_multiplier"),
    Option("xtc_probability", "float", 0.0, "XTC: how often the likeliest tokens are cut (0 means off)",
           ("--xtc-probability",), low=0, high=1, wire="xtc_probability"),
    Option("xtc_threshold", "float", 0.1, "XTC: tokens at least this likely are cut, all but the least likely of "
           "them", ("--xtc-threshold",), low=0, high=0.5, wire="xtc_threshold"),
)
BY_NAME = {o.name: o for o in OPTIONS}
# Options that only a chat turn can honour: given to a %%vllama cell, the cell is a chat turn.
CHAT_ONLY = ("think", "max_thinking", "tool_choice")
# Options that constrain the whole output; at most one per request (a forced tool call is one).
CONSTRAINTS = ("json_schema", "grammar", "tool_choice")
# The sampling controls beyond temperature, top-p and top-k: each engine honours those its
# capabilities name (Capabilities.samplers); another one set away from its default is refused.
SAMPLERS = ("repetition_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty", "min_p", "typical_p",
            "logit_bias", "min_tokens", "banned", "dry_multiplier", "xtc_probability", "xtc_threshold")
# The options a %config default can be given for (VllamaMagics traits).
CONFIGURED = ("max_tokens", "temperature", "top_p", "repetition_penalty", "min_p")


def is_set(name: str, value) -> bool:
    """Whether option `name` holds something other than its neutral default."""
    return value not in (BY_NAME[name].default, None, (), {})


def _bias(v) -> dict:
    """logit_bias as {token id (int) or token text (str): bias}: a dict, or TOKEN=BIAS words."""
    if isinstance(v, (list, tuple)):
        v = dict(_bias_word(w) for w in v)
    if not isinstance(v, dict):
        raise VllamaError(f"logit_bias must be a dict like {{' sea': -100, 1234: 5}} (got {type(v).__name__})")
    out: dict = {}
    for key, bias in v.items():
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key)   # as the OpenAI API writes ids
        if isinstance(key, bool) or not isinstance(key, (int, str)) or key == "" or (isinstance(key, int) and key < 0):
            raise VllamaError(f"logit_bias key {key!r} is not a token: give a token id (>= 0) or its text")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise VllamaError(f"logit_bias of {key!r} must be a number from -100 to 100 (got {bias!r})")
        out[key] = float(bias)
    return out


def _bias_word(word) -> tuple:
    if not isinstance(word, str) or "=" not in word:
        raise VllamaError(f"--logit-bias takes TOKEN=BIAS, like 1234=-100 or ' sea'=-100 (got {word!r})")
    token, _, bias = word.rpartition("=")
    try:
        return token, float(bias)
    except ValueError:
        raise VllamaError(f"--logit-bias {word!r}: the bias after '=' must be a number from -100 to 100") from None


def is_chat(values) -> bool:
    """Whether options given as a dict (or an object with those attributes) ask for a chat turn."""
    get = values.get if isinstance(values, dict) else (lambda k: getattr(values, k, None))
    return any(get(k) is not None for k in CHAT_ONLY)


def forced(tool_choice) -> bool:
    """Whether `tool_choice` forces a call ('required' or a tool's name), rather than leaving it to the model."""
    return tool_choice not in (None, "auto", "none")


# -- argparse (the %%vllama magic and the vllama CLI) ----------------------------------------
def arguments() -> list[tuple[tuple[str, ...], dict]]:
    """(flags, argparse keywords) of every option; defaults are None so configured ones apply."""
    out = []
    for o in OPTIONS:
        kw: dict = {"dest": o.name, "default": None, "help": o.help}
        if o.kind in ("int", "float"):
            kw["type"] = int if o.kind == "int" else float
            kw["metavar"] = "N" if o.kind == "int" else "X"
        elif o.kind == "bool":
            kw.update(action="store_const", const=True)
        elif o.kind == "texts":
            kw.update(action="append", metavar="TEXT")
        elif o.kind == "bias":
            kw.update(action="append", metavar="TOKEN=BIAS")
        elif o.kind == "think":
            kw.update(nargs="?", const=True, metavar="LEVEL", type=_think_word)
        else:
            kw["metavar"] = o.name.upper()
        out.append((o.flags, kw))
        if o.kind == "think":
            out.append((("--no-think",), {"dest": o.name, "action": "store_const", "const": False,
                                          "help": "answer without thinking (the model's off switch)"}))
    return out


def _think_word(text: str):
    return {"true": True, "on": True, "false": False, "off": False}.get(text.lower(), text.lower())


def add_arguments(parser) -> None:
    for flags, kw in arguments():
        parser.add_argument(*flags, **kw)


def decorate(func):
    """Apply IPython `argument` decorators for every option (before `magic_arguments()`)."""
    from IPython.core.magic_arguments import argument

    for flags, kw in reversed(arguments()):
        func = argument(*flags, **kw)(func)
    return func


def from_args(args) -> dict:
    """The options given on a command line (argparse namespace), None for those not given."""
    return {o.name: getattr(args, o.name) for o in OPTIONS}


# -- %config traits ----------------------------------------------------------------------
def trait(name: str):
    """A configurable traitlets trait whose default and help come from the declaration."""
    from traitlets import Bool, Float, Int

    o = BY_NAME[name]
    cls = {"int": Int, "float": Float, "bool": Bool}[o.kind]
    return cls(o.default, help=f"Default --{name.replace('_', '-')}: {o.help}.").tag(config=True)


# -- OpenAI request bodies ---------------------------------------------------------------
# Fields other names OpenAI clients send for the same option (the first one given wins).
ALIASES = {"max_tokens": ("max_completion_tokens",), "repetition_penalty": ("repeat_penalty",)}
# Request fields read besides the options' own (by from_openai below and the share server).
READ_FIELDS = ("model", "prompt", "messages", "stream", "stream_options", "n", "tools", "tool_choice", "logprobs",
               "top_logprobs", "response_format", "structured_outputs", "grammar", "json_schema", "reasoning_effort",
               "chat_template_kwargs")
# Fields OpenAI clients send routinely that change nothing in the tokens: accepted, not used.
ROUTINE_FIELDS = ("user", "metadata", "store", "service_tier")
# Fields that change the output and cannot be honoured, with the value that means "off" (accepted).
NEUTRAL = {"best_of": 1, "echo": False, "suffix": None, "parallel_tool_calls": True}


def check_fields(body: dict) -> None:
    """One line for a field that would change the output and that we cannot honour."""
    known = {o.wire for o in OPTIONS if o.wire} | {a for names in ALIASES.values() for a in names}
    for key, v in body.items():
        if key in NEUTRAL:
            if v is not None and v != NEUTRAL[key] and not (key == "best_of" and v == body.get("n")):
                raise VllamaError(f"{key}={v!r} is not supported by the shared vllama engine: leave it out")
        elif key not in known and key not in READ_FIELDS and key not in ROUTINE_FIELDS:
            raise VllamaError(f"unknown request field {key!r}: the shared vllama engine cannot honour it, leave it out")


def from_openai(body: dict, chat: bool) -> dict:
    """Option values from an OpenAI request body (share server). Unknown values are left to Sampling's checks."""
    out: dict = {}
    for o in OPTIONS:
        if o.wire is None:
            continue
        for key in (o.wire, *ALIASES.get(o.name, ())):
            if body.get(key) is not None:
                out[o.name] = body[key]
                break
    if chat:
        if body.get("logprobs"):
            out["logprobs"] = body.get("top_logprobs") or 0
    elif body.get("logprobs") is not None:
        out["logprobs"] = body["logprobs"]
    structured = body.get("structured_outputs") if isinstance(body.get("structured_outputs"), dict) else {}
    if set(structured) - {"json", "grammar"}:
        raise VllamaError(f"structured_outputs {sorted(set(structured) - {'json', 'grammar'})[0]!r} is not supported "
                          "by the shared vllama engine: use 'json' (a JSON schema) or 'grammar' (GBNF)")
    for key, field, kind in (("grammar", "grammar", str), ("json_schema", "json_schema", dict)):
        for v in (body.get(field), structured.get("json" if key == "json_schema" else key)):
            if isinstance(v, kind):
                out[key] = v
    fmt = body.get("response_format")
    if fmt is not None and _response_format(fmt) is not None:
        out["json_schema"] = _response_format(fmt)
    if body.get("reasoning_effort") is not None:
        out["think"] = body["reasoning_effort"]
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and "enable_thinking" in kwargs:
        out["think"] = kwargs["enable_thinking"]
    tc = body.get("tool_choice")
    if tc is not None:
        out["tool_choice"] = tc["function"]["name"] if isinstance(tc, dict) and isinstance(tc.get("function"), dict) else tc
    return out


def _response_format(fmt):
    """response_format -> the JSON schema to constrain to (None: text)."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict) and isinstance(fmt["json_schema"].get("schema"), dict):
        return fmt["json_schema"]["schema"]
    raise VllamaError("response_format must be {'type': 'text'}, {'type': 'json_object'} or "
                      "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}")


def to_openai(s, preset, chat: bool) -> dict:
    """The OpenAI request fields for Sampling `s` on a server of `preset` (remote.Preset)."""
    body: dict = {}
    rename = dict(preset.rename)
    for o in OPTIONS:
        v = getattr(s, o.name)
        if o.wire is None or v is None or v == () or (o.kind == "bool" and not v):
            continue
        if (o.name == "top_k" and not preset.top_k) or (o.name == "ignore_eos" and not preset.ignore_eos):
            continue   # gate.check refused a value the server cannot take
        if (o.name == "top_k" and not v) or (o.name in SAMPLERS and not is_set(o.name, v)):
            continue   # neutral: the server's own default is the same
        body[rename.get(o.name, o.wire)] = list(v) if o.kind == "texts" else v
    if s.logprobs is not None:
        body.update({"logprobs": True, "top_logprobs": s.logprobs} if chat else {"logprobs": s.logprobs})
    if s.json_schema:   # gate.check: only where the preset has a schema field
        field = preset.schema_field
        body[field] = ({"json": s.json_schema} if field == "structured_outputs" else s.json_schema
                       if field == "json_schema" else
                       {"type": "json_schema", "json_schema": {"name": "output", "schema": s.json_schema}})
    if s.grammar is not None:   # gate.check: only where the preset takes one
        if preset.schema_field == "structured_outputs":
            body["structured_outputs"] = {"grammar": s.grammar}
        else:   # the llama.cpp servers and our shared engine
            body["grammar"] = s.grammar
    if s.think is not None:
        if isinstance(s.think, str):
            body["reasoning_effort"] = s.think
        else:
            body["chat_template_kwargs"] = {"enable_thinking": s.think}
    if s.tool_choice is not None:
        body["tool_choice"] = s.tool_choice if s.tool_choice in ("auto", "none", "required") else \
            {"type": "function", "function": {"name": s.tool_choice}}
    return body
