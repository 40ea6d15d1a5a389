"""Text-only language models: the runtimes that write or rewrite captions from text.

The grounded pipeline's LLM writer and the ``--rewrite`` stage both need "a model that turns
prompts into text", whether it is a GGUF file, a Hugging Face causal LM or a server speaking
the OpenAI protocol. They all implement :class:`TextLLM`; :func:`load_llm` picks one from a
spec string of the same shape as ``--model`` (``gguf:PATH``, ``hf:ORG/NAME``,
``openai-compatible:NAME``, ``smollm2`` for the offline default).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from captionkit.types import Decoding


class RuntimeOptions(BaseModel):
    """The options a text-LLM runtime takes (``load_llm(spec, **options)``), as a pydantic
    model: ``extra="forbid"`` turns a typo into a one-line error naming the options there are,
    and a third-party runtime declares its own the same way."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationConfig(Decoding):
    """Deprecated: build a :class:`~captionkit.types.Decoding` instead.

    The text LLMs' old settings type, kept (until the hosted-API room has moved to
    ``Decoding``) as a thin subclass with its old defaults and its old rule that a
    ``temperature`` above 0 means sampling. Every runtime reads it as the ``Decoding`` it is.
    """

    max_new_tokens: int = 80
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature > 0 and not self.do_sample:
            object.__setattr__(self, "do_sample", True)
        super().__post_init__()

    @staticmethod
    def from_decoding(decoding: Decoding, stop: tuple[str, ...] = ()) -> Decoding:
        """Deprecated: ``text_decoding(decoding, stop=stop)``."""
        return text_decoding(decoding, stop=stop)


def text_decoding(
    decoding: Decoding, *, stop: tuple[str, ...] = (), max_new_tokens: int | None = None
) -> Decoding:
    """The settings a text LLM gets for a caption request's ``decoding``.

    So a rewrite stage or an LLM writer honours the same ``--temperature``/``--seed`` flags as
    the first stage. Beams and the repetition penalty are the captioner's and are not passed
    on; greedy decodings carry ``temperature=0`` (what llama.cpp and the OpenAI protocol
    read as greedy), and a sampled one keeps the 50 likeliest tokens unless ``--top-k``
    says otherwise (small text models wander off with the whole vocabulary).
    """
    return Decoding(
        max_new_tokens=max_new_tokens or decoding.max_new_tokens,
        do_sample=decoding.do_sample,
        temperature=decoding.temperature if decoding.do_sample else 0.0,
        top_p=decoding.top_p,
        top_k=decoding.top_k or 50,
        seed=decoding.seed,
        stop=tuple(stop),
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
    #: Its options (validated by :func:`~captionkit.llm.loader.load_llm` before construction);
    #: None: the constructor's keyword arguments are checked by name instead.
    Options: ClassVar[type[RuntimeOptions] | None] = None

    @abstractmethod
    def chat(self, conversations: list[list[ChatMessage]], config: Decoding) -> list[str]:
        """Answer each conversation (batched where the runtime can); the assistant text only.

        ``config`` is the one decoding-settings type; each runtime turns it into its own
        arguments and ends generation at ``config.stop``.
        """

    def complete(self, prompts: list[str], config: Decoding) -> list[str]:
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
