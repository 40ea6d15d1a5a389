"""Text LLMs over HTTP: any OpenAI-protocol server (vLLM, Ollama, llama.cpp, LM Studio), OpenAI,
Gemini and Anthropic.

Each class is a :class:`~captionkit.llm.base.TextLLM` over one vendor's
:class:`~captionkit.providers.base.Provider`, the same one the image captioners use: the
endpoint, key, request body, parsing and error rules are the provider's, so a caption
rewritten by ``openai:`` fails, retries and bills exactly as one captioned by it: sampling
parameters only when sampling, parameters a model rejects dropped (and remembered for the
run), billing/quota errors stopping the run, truncated or refused answers failing with the
reason, usage counted even then.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from captionkit.errors import ConfigError
from captionkit.http import APIClient
from captionkit.llm.base import ChatMessage, GenerationConfig, TextLLM
from captionkit.providers import get_provider
from captionkit.providers.base import Provider, RequestFailed, as_decoding, resolve_key
from captionkit.types import Decoding

__all__ = [
    "HOSTED_KINDS",
    "AnthropicLLM",
    "GeminiLLM",
    "HTTPTextLLM",
    "OpenAICompatibleLLM",
    "OpenAILLM",
    "RequestFailed",
    "hosted_llm_options",
    "resolve_key",
]

#: Text-model spec kinds served over HTTP by this module (``KIND:MODEL``).
HOSTED_KINDS = ("openai-compatible", "openai", "gemini", "anthropic")


def hosted_llm_options(
    spec: str, options: Mapping[str, Any] | None = None, *, key_source: str = "api_key"
) -> dict[str, Any]:
    """The ``load_llm`` options for ``spec`` from a caller's settings, so every key source
    (a flag, a ``[backends.NAME]`` table, then the vendor's environment variables) reaches
    every hosted text LLM the same way: None values are dropped; a hosted spec also gets
    ``key_source`` (named in its missing-key error); a local one gets no ``api_key``."""
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if spec.partition(":")[0].strip().lower() in HOSTED_KINDS:
        opts.setdefault("key_source", key_source)
    else:
        opts.pop("api_key", None)
        opts.pop("key_source", None)
    return opts


class HTTPTextLLM(TextLLM):
    """A :class:`TextLLM` answering through one vendor's HTTP API, conversations in parallel.

    Token usage is summed in :attr:`usage`. Options: ``timeout``, ``max_retries``,
    ``concurrency``, ``rpm`` (requests per minute). The key is ``api_key`` or the vendor's
    environment variables, checked at construction, so a missing one fails before any image
    is captioned; ``key_source`` names where an explicit key would have come from (the
    caller's flag or config table), for that one-line error.
    """

    provider_name = "openai-compatible"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: Any = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 4,
        rpm: float | None = None,
        client: APIClient | None = None,
        key_source: str = "api_key",
    ) -> None:
        if not model:
            raise ConfigError(f"{self.provider_name}: name a model, e.g. {self.provider_name}:NAME")
        self.concurrency = max(1, concurrency)
        self.provider: Provider = get_provider(self.provider_name)(
            model,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            concurrency=self.concurrency,
            rpm=rpm,
            client=client,
            key_source=key_source,
        )
        self.provider.headers()  # no key: one line now
        self.model = model
        self.base_url = self.provider.base_url
        self.who = self.label = self.provider.who
        self.client = self.provider.client
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self._lock = threading.Lock()

    def _count(self, usage: dict[str, int]) -> None:
        with self._lock:
            for k in self.usage:
                self.usage[k] += usage.get(k, 0)

    def _one(self, conversation: list[ChatMessage], decoding: Decoding) -> str:
        try:
            completion = self.provider.send(self.provider.text_body(conversation, decoding))
        except RequestFailed as exc:
            self._count(exc.usage)  # a refused or truncated answer is billed all the same
            raise
        self._count(completion.usage)
        return cut_at_stop(completion.texts[0], decoding.stop).strip()

    def chat(
        self, conversations: list[list[ChatMessage]], config: GenerationConfig | Decoding
    ) -> list[str]:
        decoding = as_decoding(config)
        self.provider.check_decoding(decoding)  # out-of-range settings: one line, no request
        if len(conversations) <= 1:
            return [self._one(c, decoding) for c in conversations]
        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, decoding), conversations))

    def close(self) -> None:
        self.provider.close()


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to its first stop string: the same answer whether the server honoured
    ``stop`` or the model rejected it and it was left out (o3, o4-mini, gpt-5)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


class OpenAICompatibleLLM(HTTPTextLLM):
    """Any server speaking OpenAI Chat Completions (vLLM, Ollama, llama.cpp, LM Studio).

    ``base_url`` is required and ends in ``/v1``; the key (optional for local servers) comes
    from ``api_key`` or ``OPENAI_COMPATIBLE_API_KEY``.
    """

    provider_name = "openai-compatible"


class OpenAILLM(HTTPTextLLM):
    """OpenAI itself: key from ``api_key`` or ``OPENAI_API_KEY``."""

    provider_name = "openai"


class GeminiLLM(HTTPTextLLM):
    """Gemini ``generateContent``; key from ``api_key``, GEMINI_API_KEY or GOOGLE_API_KEY."""

    provider_name = "gemini"


class AnthropicLLM(HTTPTextLLM):
    """Anthropic Messages: key from ``api_key`` or ``ANTHROPIC_API_KEY``."""

    provider_name = "anthropic"
