"""Text LLMs over HTTP: any OpenAI-protocol server (vLLM, Ollama, llama.cpp, LM Studio), OpenAI,
Gemini and Anthropic.

Each class is a :class:`~captionkit.llm.base.TextLLM` over one vendor's
:class:`~captionkit.providers.base.Provider`, the same one the image captioners use: the
endpoint, key, request body, parsing and error rules are the provider's, so a caption
rewritten by ``openai:`` fails, retries and bills exactly as one captioned by it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from captionkit.errors import ConfigError
from captionkit.http import APIClient
from captionkit.llm.base import ChatMessage, GenerationConfig, TextLLM
from captionkit.providers import get_provider
from captionkit.providers.base import Provider, RequestFailed, as_decoding, resolve_key
from captionkit.types import Decoding

__all__ = [
    "AnthropicLLM",
    "GeminiLLM",
    "HTTPTextLLM",
    "OpenAICompatibleLLM",
    "OpenAILLM",
    "RequestFailed",
    "resolve_key",
]


class HTTPTextLLM(TextLLM):
    """A :class:`TextLLM` answering through one vendor's HTTP API, conversations in parallel.

    Token usage is summed in :attr:`usage`. Options: ``timeout``, ``max_retries``,
    ``concurrency``, ``rpm`` (requests per minute). The key is checked at construction, so a
    missing one fails before any image is captioned.
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
        )
        self.provider.headers()  # no key: one line now
        self.model = model
        self.base_url = self.provider.base_url
        self.who = self.label = self.provider.who
        self.client = self.provider.client
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self._lock = threading.Lock()

    def _one(self, conversation: list[ChatMessage], decoding: Decoding) -> str:
        completion = self.provider.send(self.provider.text_body(conversation, decoding))
        with self._lock:
            for k in self.usage:
                self.usage[k] += completion.usage.get(k, 0)
        return completion.texts[0].strip()

    def chat(
        self, conversations: list[list[ChatMessage]], config: GenerationConfig | Decoding
    ) -> list[str]:
        decoding = as_decoding(config)
        if len(conversations) <= 1:
            return [self._one(c, decoding) for c in conversations]
        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, decoding), conversations))

    def close(self) -> None:
        self.provider.close()


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
