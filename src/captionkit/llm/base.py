"""Text-only language models: the runtimes that write or rewrite captions from text.

The grounded pipeline's LLM writer and the ``--rewrite`` stage both need "a model that turns
prompts into text", whether it is a GGUF file, a Hugging Face causal LM or a server speaking
the OpenAI protocol. They all implement :class:`TextLLM`; :func:`load_llm` picks one from a
spec string of the same shape as ``--model`` (``gguf:PATH``, ``hf:ORG/NAME``,
``openai-compatible:NAME``, ``smollm2`` for the offline default).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captionkit.types import Decoding


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 80
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    @classmethod
    def from_decoding(cls, decoding: Decoding, stop: tuple[str, ...] = ()) -> GenerationConfig:
        """The text-LLM settings matching a caption request's :class:`~captionkit.types.Decoding`.

        So a rewrite stage honours the same ``--temperature``/``--seed`` flags as the first
        stage; ``do_sample=False`` maps to greedy whatever the temperature says.
        """
        return cls(
            max_new_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature if decoding.do_sample else 0.0,
            top_p=decoding.top_p,
            stop=tuple(stop),
            seed=decoding.seed,
        )


def trim_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string (the stop itself removed).

    Runtimes stop generating at a stop string, but the token that completed it may carry
    more text, and servers differ in whether they strip it; every runtime calls this so the
    result is the same whichever one produced it.
    """
    cut = len(text)
    for s in stop:
        if s:
            at = text.find(s)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


class TextLLM(ABC):
    """A text model that completes chats (instruct models) or raw prompts (base models)."""

    #: Short label stored with results, e.g. "gguf:SmolLM2-135M-Instruct.Q4_1".
    label: str = ""

    @abstractmethod
    def chat(self, conversations: list[list[ChatMessage]], config: GenerationConfig) -> list[str]:
        """Answer each conversation (batched where the runtime can); the assistant text only."""

    def complete(self, prompts: list[str], config: GenerationConfig) -> list[str]:
        """Continue raw prompts (base models, instruction/input/response layouts).

        The default wraps each prompt as a single user turn; runtimes that can do raw
        completion override it.
        """
        return self.chat([[ChatMessage("user", p)] for p in prompts], config)

    def close(self) -> None:
        """Free the model or the connection."""

    def __enter__(self) -> TextLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"
