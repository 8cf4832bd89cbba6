"""The session's conversation: the history, a chat turn, and the tool loop (the model calls
tools, the notebook runs them when allowed, the model is asked again)."""
from __future__ import annotations

from dataclasses import replace

from .errors import VllamaError
from .messages import check_messages
from .options import Option, forced
from .result import Result, Stream
from .sampling import Sampling
from .templates import fit_context
from .tools import MAX_ROUNDS, check_choice, make_tools, run_call, schemas, shown

ROUNDS = Option("max_rounds", "int", MAX_ROUNDS, "how many times the model may be asked again after its tool calls",
                low=1)


class Conversation:
    """Chat, as a part of Session (whose fields it uses: history, and _engine/_guarded)."""

    def chat(self, message, sampling: Sampling | None = None, system: str | None = None,
             keep: bool = True, tools=None, images=None, **overrides) -> Stream:
        """Continue the conversation with `message` (text, or a list of OpenAI-shaped messages); the
        reply joins the history when it ends. With keep=False the message is answered on its own
        and the history is left as it was. `tools`: Python functions the model may call (the
        calls come back in `result.tool_calls`; chat_loop() runs them). `images`: figures, PIL
        images, arrays, bytes or paths the model is shown with a text message."""
        s = Sampling.make(sampling, **overrides)
        table = make_tools(tools)
        check_choice(s.tool_choice, table)
        eng = self._engine()
        msgs = fit_context(eng, self._conversation(message, system, keep, images), s)

        def remember(stream: Stream) -> None:
            if keep and stream.finish_reason != "error":
                self.history[:] = msgs + [reply(stream)]
        return self._guarded(eng.chat(msgs, s, schemas(table)), remember)

    def chat_loop(self, message, sampling: Sampling | None = None, system: str | None = None, keep: bool = True,
                  tools=None, run_tools: bool = False, render=None, show=None, max_rounds: int = MAX_ROUNDS,
                  images=None, **overrides) -> Result:
        """Chat with tools to the end: each round's calls are shown and, with run_tools=True, run,
        their results sent back, and the model asked again (at most `max_rounds` rounds, 8 by default).
        `render(stream) -> Result` shows a round (default: none), `show(line)` a call or result.
        Returns the last round's Result; `.rounds` holds the ones before it."""
        s = Sampling.make(sampling, **overrides)
        table = make_tools(tools)
        check_choice(s.tool_choice, table)
        max_rounds = ROUNDS.check(max_rounds)
        render = render or (lambda st: st.run())
        show = show or (lambda line: None)
        eng = self._engine()
        msgs = fit_context(eng, self._conversation(message, system, keep, images), s)
        rounds: list[Result] = []
        for _ in range(max_rounds):
            result = render(self._guarded(self._engine().chat(msgs, s, schemas(table))))
            rounds.append(result)
            if result.finish_reason == "error":
                break
            msgs = msgs + [reply(result)]
            if not result.tool_calls or result.interrupted:
                break
            if not run_tools:
                for call in result.tool_calls:
                    show(f"→ {shown(call)}  (not run: pass run_tools=True, or --run-tools, to run it)")
                break
            pictures, sees = [], self._engine().capabilities().images
            for call in result.tool_calls:
                show(f"→ {shown(call)}")
                out, _ok, images = run_call(call, table)
                if images and not sees:
                    out += f"\n[{len(images)} image(s) this model cannot see]"
                pictures += images if sees else []
                show(f"← {out}" + (f"  (+ {len(images)} image(s), shown to the model)" if images and sees else ""))
                msgs.append({"role": "tool", "tool_call_id": call["id"], "content": out})
            if pictures:   # templates show images in user turns: the tools' images follow their results
                msgs.append({"role": "user", "content": [{"type": "text", "text": "The images the tools returned:"}]
                             + [{"type": "image_url", "image_url": {"url": u}} for u in pictures]})
            if forced(s.tool_choice):
                s = replace(s, tool_choice="auto")   # a forced call is forced once; then the model answers
        else:
            from .errors import notice
            notice(f"stopped after {max_rounds} round{'s' if max_rounds > 1 else ''} of tool calls: the model kept "
                   "calling tools (raise max_rounds, --max-rounds, to let it go on)")
        if keep:
            self.history[:] = msgs
        final = rounds[-1]
        final.rounds = rounds[:-1]
        return final

    def _conversation(self, message, system: str | None, keep: bool, images=None) -> list[dict]:
        """The history (when kept), the system prompt, and the new message(s), checked."""
        if images is not None and not isinstance(message, str):
            raise VllamaError("images= goes with a text message; in a list of messages put them in the content "
                              "as {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,...'}} parts")
        if message is None or isinstance(message, str):
            if not (message or "").strip():
                raise VllamaError("the message is empty: write something to say")
            new = [{"role": "user", "content": message}]
            if images is not None:
                from .images import as_images

                parts = [p.part() for p in as_images(images)]
                if not parts:
                    raise VllamaError("images= is empty: give one or more images, or leave it out")
                new = [{"role": "user", "content": parts + [{"type": "text", "text": message}]}]
        elif isinstance(message, list):
            new = check_messages(message)
        else:
            raise VllamaError(f"a chat message is text or a list of messages, not {type(message).__name__}")
        msgs = list(self.history) if keep else []
        if system and not any(m["role"] in ("system", "developer") for m in msgs + new[:1]):
            msgs.insert(0, {"role": "system", "content": system})
        return check_messages(msgs + new)


def reply(out) -> dict:
    """The assistant message a finished stream or result adds to the conversation: the answer and
    any tool calls; the thinking rides along as reasoning_content (templates that show earlier
    thinking read it, the others leave it out)."""
    msg: dict = {"role": "assistant", "content": out.text}
    if out.tool_calls:
        msg["tool_calls"] = [dict(c) for c in out.tool_calls]
    if out.reasoning:
        msg["reasoning_content"] = out.reasoning
    return msg
