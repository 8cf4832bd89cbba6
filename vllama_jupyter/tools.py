"""The notebook's Python functions as tools: their JSON schema from the signature (pydantic), the
model's calls read from its output, and calls run only when the user allows it. No text is ever
evaluated as code: a call names a function the user passed, with arguments checked against its
signature."""
from __future__ import annotations

import inspect
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import VllamaError

MAX_ROUNDS = 8   # model -> tools -> model rounds before the loop stops


@dataclass
class Tool:
    name: str
    schema: dict                       # OpenAI's {"type": "function", "function": {...}}
    check: Callable[[dict], dict]      # the arguments, checked (VllamaError says what is wrong)
    run: Callable[[dict], Any]         # the call: a value, or a ToolOutput


@dataclass
class ToolOutput:
    """What a tool sends back beside text: images (data: URLs) for a model that sees them."""
    text: str
    images: list = field(default_factory=list)


def make_tools(funcs) -> dict[str, Tool]:
    """Tools by name from a list of functions and MCP servers (v.mcp); one line per mistake."""
    if funcs is None:
        return {}
    if callable(funcs) or hasattr(funcs, "mcp_tools"):
        funcs = [funcs]
    if isinstance(funcs, (str, bytes, dict)) or not hasattr(funcs, "__iter__"):
        raise VllamaError(f"tools must be a list of Python functions (or MCP servers), not {type(funcs).__name__}")
    out: dict[str, Tool] = {}
    for f in funcs:
        for t in f.mcp_tools() if hasattr(f, "mcp_tools") else [_tool(f)]:
            if t.name in out:
                raise VllamaError(f"two tools are named {t.name!r}: give each function its own name "
                                  "(or leave out one of the MCP servers that have it)")
            out[t.name] = t
    if not out:
        raise VllamaError("tools is an empty list: pass the functions the model may call, or leave tools out")
    return out


def _tool(f) -> Tool:
    import typing

    from pydantic import create_model

    if not callable(f) or inspect.isclass(f):
        raise VllamaError(f"a tool must be a function, not {type(f).__name__} ({f!r:.40})")
    name = getattr(f, "__name__", "")
    if not name.isidentifier():
        raise VllamaError(f"a tool needs a name the model can call: {name or f!r:.40} is not one (use def, not lambda)")
    try:
        sig = inspect.signature(f)
        hints = typing.get_type_hints(f)
    except (TypeError, ValueError, NameError) as e:
        raise VllamaError(f"cannot read the signature of tool {name}: {e}") from None
    fields = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise VllamaError(f"tool {name} takes *args or **kwargs: give it named parameters the model can fill")
        fields[p.name] = (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
    try:
        model = create_model(f"{name}_arguments", **fields)
        params = model.model_json_schema()
    except Exception as e:
        raise VllamaError(f"tool {name} has parameters with no JSON schema ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:120]}): use plain types such as str, int, float, bool, list, Literal") from None
    params.pop("title", None)
    for prop in params.get("properties", {}).values():
        prop.pop("title", None)
    doc = inspect.getdoc(f) or ""
    fn = {"name": name, "description": doc.split("\n\n")[0].strip(), "parameters": params}

    def check(args: dict) -> dict:
        from pydantic import ValidationError

        try:
            valid = model.model_validate(args)
        except ValidationError as e:
            err = e.errors()[0]
            raise VllamaError(f"{'.'.join(str(x) for x in err['loc']) or 'arguments'}: {err['msg']}") from None
        return {k: getattr(valid, k) for k in model.model_fields}
    return Tool(name, {"type": "function", "function": fn}, check, lambda args: f(**args))


def schemas(tools: dict[str, Tool]) -> list[dict] | None:
    return [t.schema for t in tools.values()] or None


def check_choice(choice, tools: dict[str, Tool]) -> None:
    if choice is None:
        return
    if not tools:
        raise VllamaError(f"tool_choice={choice!r} needs tools: pass tools=[...] (or --tools f,g)")
    if choice not in ("auto", "none", "required") and choice not in tools:
        raise VllamaError(f"tool_choice {choice!r} is neither auto, none, required nor one of the tools "
                          f"({', '.join(tools)})")


# -- calls the model wrote ----------------------------------------------------------------------
def parse_calls(body: str, fmt: str | None) -> list[dict]:
    """The OpenAI tool calls in one call body of format `fmt` (see reasoning.CALLS); VllamaError
    when it holds none."""
    body = body.strip()
    if fmt == "harmony":   # NAME<|channel|>commentary json<|message|>{...}
        name, sep, args = body.partition("<|message|>")
        name = name.split("<|", 1)[0].split()[0] if name.strip() else ""
        if not sep or not name:
            raise VllamaError("a call without a function name and <|message|>")
        return [_call(name, _object(args))]
    if fmt == "deepseek":   # NAME<｜tool▁sep｜>{...}, or function<｜tool▁sep｜>NAME\n```json\n{...}\n```
        left, sep, right = body.partition("<｜tool▁sep｜>")
        if "```" in right:
            name, _, rest = right.partition("\n")
            args = rest.strip().removeprefix("```json").removesuffix("```")
        else:
            name, args = left, right
        if not sep or not name.strip():
            raise VllamaError("a call without a function name and <｜tool▁sep｜>")
        return [_call(name.strip(), _object(args))]
    if fmt == "mistral" and not body.startswith("["):   # NAME[CALL_ID]id[ARGS]{...} or NAME[ARGS]{...}
        name, sep, args = body.partition("[ARGS]")
        name = name.split("[CALL_ID]", 1)[0].strip()
        if not sep or not name:
            raise VllamaError("a call without a function name and [ARGS]")
        return [_call(name, _object(args))]
    if body.startswith("<function="):
        return [_call(*_xml_call(body))]
    try:
        data = json.loads(body)
    except ValueError as e:
        raise VllamaError(f"not JSON ({e.msg} at character {e.pos})") from None
    items = data if isinstance(data, list) and fmt == "mistral" else [data]
    return [_json_call(x) for x in items] or _none()


def _none():
    raise VllamaError("an empty list of calls")


def _json_call(data) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        raise VllamaError("no function name in it")
    args = data.get("arguments", data.get("parameters", {}))
    return _call(data["name"], _object(args) if isinstance(args, str) else args)


def _object(args) -> dict:
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            raise VllamaError("its arguments are not JSON") from None
    if not isinstance(args, dict):
        raise VllamaError("its arguments are not an object")
    return args


def whole_answer_call(text: str) -> list[dict] | None:
    """Llama 3.x: an answer that is exactly {"name": ..., "parameters": {...}} is a call."""
    t = text.strip()
    if not (t.startswith("{") and t.endswith("}")):
        return None
    try:
        data = json.loads(t)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("name"), str) and isinstance(data.get("parameters"), dict):
        return [_call(data["name"], data["parameters"])]
    return None


def _call(name: str, args: dict) -> dict:
    if not isinstance(args, dict):
        raise VllamaError("its arguments are not an object")
    # nine letters and digits: the id shape Mistral's templates insist on
    return {"id": uuid.uuid4().hex[:9], "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


def _xml_call(body: str) -> tuple[str, dict]:
    import re

    m = re.fullmatch(r"<function=([^>\s]+)>(.*?)</function>", body, re.S)
    if not m:
        raise VllamaError("a <function=...> block that is not closed by </function>")
    args = {}
    for p in re.finditer(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", m.group(2), re.S):
        try:
            args[p.group(1)] = json.loads(p.group(2))
        except ValueError:
            args[p.group(1)] = p.group(2)   # a plain string value, as these templates write them
    return m.group(1), args


def shown(call: dict) -> str:
    """→ lookup(name="ROMEO") for the cell."""
    fn = call["function"]
    try:
        args = json.loads(fn["arguments"])
        inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    except (ValueError, AttributeError):
        inner = fn["arguments"]
    return f"{fn['name']}({inner})"


def run_call(call: dict, tools: dict[str, Tool]) -> tuple[str, bool, list]:
    """(the text sent back to the model, whether it went well, the images it returned as data:
    URLs). A tool that fails sends its error."""
    fn = call["function"]
    tool = tools.get(fn["name"])
    if tool is None:
        return f"error: there is no tool named {fn['name']!r}; the tools are {', '.join(tools)}", False, []
    try:
        args = json.loads(fn["arguments"])
    except ValueError:
        return f"error: the arguments for {tool.name} are not JSON", False, []
    try:
        args = tool.check(args)
    except VllamaError as e:
        return f"error: bad arguments for {tool.name}: {e}", False, []
    try:
        value = tool.run(args)
    except VllamaError as e:
        return f"error: {tool.name}: {e}", False, []
    except Exception as e:
        return f"error: {tool.name} raised {type(e).__name__}: {e}", False, []
    if isinstance(value, ToolOutput):
        return value.text, True, list(value.images)
    if isinstance(value, str):
        return value, True, []
    try:
        return json.dumps(value, ensure_ascii=False, default=str), True, []
    except (TypeError, ValueError):
        return str(value), True, []


def call_grammar(tools: list[dict], choice: str, fmt: str | None = "hermes", before: str = "") -> str:
    """GBNF forcing one call, in the model's format `fmt`, of the tool named `choice` or, for
    'required', of any of `tools` (OpenAI tool schemas), arguments matching its parameters.
    `before`: text the output must start with (the end of a thought the prompt opened)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    by_name = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in tools}
    names = list(by_name) if choice == "required" else [choice]
    start = f"{_literal(before)} " if before else ""
    if fmt in OUTSIDE:   # the name is outside the JSON: one tool at a time
        if len(names) > 1:
            raise VllamaError("this model's calls are forced one tool at a time: give tool_choice a "
                              f"tool's name ({', '.join(names)})")
        gbnf = _renamed(json_schema_to_gbnf(json.dumps(by_name[names[0]])), "args")
        head, tail = OUTSIDE[fmt]
        return f'root ::= {start}{_literal(head.format(name=names[0]))} args {_literal(tail)}\n{gbnf}'.replace(' ""', "")
    key = "parameters" if fmt == "llama3" else "arguments"
    options = [{"type": "object", "properties": {"name": {"const": n}, key: by_name[n]},
                "required": ["name", key]} for n in names]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    gbnf = _renamed(json_schema_to_gbnf(json.dumps(schema)), "call")
    wrap = {"hermes": '"<tool_call>\\n" call "\\n</tool_call>"', "mistral": '"[TOOL_CALLS][" call "]"',
            "llama3": "call"}[fmt or "hermes"]
    return f"root ::= {start}{wrap}\n{gbnf}"


# formats whose call names the tool outside its JSON: (text before the arguments, text after)
OUTSIDE = {"harmony": ("<|start|>assistant to=functions.{name}<|channel|>commentary json<|message|>", ""),
           "deepseek": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>{name}<｜tool▁sep｜>",
                        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>")}


def _literal(text: str) -> str:
    """A GBNF string literal (its escapes are JSON's; other characters stay as they are)."""
    return json.dumps(text, ensure_ascii=False)


def _renamed(gbnf: str, name: str) -> str:
    """The grammar with its root rule named `name`."""
    return "\n".join((name + line[4:]) if line.startswith("root ") else line for line in gbnf.splitlines())
