"""The engine protocol: load, stream, generate, chat, batch, info, close.

An engine's `stream` validates its input eagerly (so bad input fails before anything runs) and
returns a `Stream` of `Delta`s; everything else is built on it here.
"""
from __future__ import annotations

from ..chat import check_messages, plain_prompt
from ..errors import VllamaError
from ..result import Result, Stream
from ..sampling import Sampling


class BaseEngine:
    name = "base"
    concurrent = False   # True when requests may run at once from several threads

    def __init__(self) -> None:
        self.model_name = ""

    # -- to implement ---------------------------------------------------------------------
    def load(self, model, **options) -> None:
        raise NotImplementedError

    def stream(self, prompt: str | list[int], sampling: Sampling | None = None) -> Stream:
        raise NotImplementedError

    def info(self) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- built on the above ---------------------------------------------------------------
    def chat_prompt(self, messages: list[dict]) -> str:
        """The prompt text for these chat messages (engines with templates override this)."""
        return plain_prompt(check_messages(messages))

    def chat(self, messages: list[dict], sampling: Sampling | None = None) -> Stream:
        return self.stream(self.chat_prompt(messages), sampling)

    def generate(self, prompt: str | list[int], sampling: Sampling | None = None) -> Result:
        return self.stream(prompt, sampling).run()

    def batch(self, prompts: list[str], sampling: Sampling | None = None) -> list[Result]:
        """Run prompts in turn; engines that batch override this to run them together."""
        return [self.generate(p, sampling) for p in check_batch(prompts)]


def check_batch(prompts: list) -> list:
    if isinstance(prompts, str) or not prompts:
        raise VllamaError("batch needs a non-empty list of prompts")
    for i, p in enumerate(prompts):
        try:
            check_prompt(p)
        except VllamaError as e:
            raise VllamaError(f"prompt {i} of the batch: {e}") from None
    return list(prompts)


def check_prompt(prompt) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise VllamaError("the prompt is empty: write some text to continue")
    elif isinstance(prompt, (list, tuple)):
        if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise VllamaError("a token-id prompt must be a non-empty list of integers")
    else:
        raise VllamaError(f"the prompt must be text or a list of token ids, not {type(prompt).__name__}")
