"""Turning chat messages into a prompt: the model's own template when it has one, a plain one
otherwise; and fitting a conversation into the context."""
from __future__ import annotations

from .errors import VllamaError

ROLES = ("system", "user", "assistant")


def check_messages(messages: list[dict]) -> list[dict]:
    if not messages:
        raise VllamaError("no messages to send: give at least one {'role': 'user', 'content': ...}")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise VllamaError(f"bad chat message {m!r}: each needs role (system/user/assistant) and content text")
    return messages


# Where a reply ends under the plain template: the end of the speaker's turn.
PLAIN_STOPS = ("\n\n", "\nUSER:")


def plain_prompt(messages: list[dict]) -> str:
    """A template-free rendering, speaker names in capitals as in a play script."""
    turns = [f"{m['role'].upper()}:\n{m['content'].strip()}\n\n" for m in messages]
    return "".join(turns) + "ASSISTANT:\n"


def render_template(template: str, messages: list[dict], bos: str = "", eos: str = "") -> str:
    """Render a Jinja chat template (as stored in GGUF / tokenizer_config.json) in a sandbox."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, bos_token=bos, eos_token=eos,
                                                add_generation_prompt=True)
    except TemplateError as e:
        raise VllamaError(f"the model's chat template refused these messages: {e}") from None


def fit_context(eng, msgs: list[dict], s) -> list[dict]:
    """`msgs` with the oldest turns dropped (never the system prompt, never the new message) until
    the prompt leaves room for the reply (max_tokens, at most half the context). Says how many."""
    try:
        ctx = eng.context_length()
        size = lambda m: eng.count_tokens(eng.chat_prompt(m))  # noqa: E731
        if size(msgs) + min(s.max_tokens, ctx // 2) <= ctx:
            return msgs
    except VllamaError:
        return msgs   # a server that cannot count: it answers for itself
    system = msgs[:1] if msgs[0]["role"] == "system" else []
    turns, last = msgs[len(system):-1], msgs[-1]
    dropped = 0
    while turns:
        cut = 2 if len(turns) > 1 and turns[0]["role"] == "user" and turns[1]["role"] == "assistant" else 1
        turns = turns[cut:]
        dropped += 1
        if size(system + turns + [last]) + min(s.max_tokens, ctx // 2) <= ctx:
            break
    if dropped:
        from .errors import notice
        notice(f"dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} of the conversation to fit "
               f"the {ctx:,}-token context")
    return system + turns + [last]
