"""``openai:MODEL`` and ``openai-compatible:MODEL``: vision models over Chat Completions.

The wire format is :mod:`captionkit.providers.openai` (and ``openai_compatible`` for vLLM,
Ollama, llama.cpp server, LM Studio); this module holds the option defaults. OpenAI fits an
image into 2048x2048 before tiling, so more pixels are not sent.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

from pydantic import Field

from captionkit.captioners.api.common import APIOptions, HostedCaptioner
from captionkit.captioners.base import BackendOptions


class OpenAIOptions(APIOptions):
    max_image_side: int = Field(2048, ge=64, description="longest side sent, in pixels")
    detail: Literal["auto", "low", "high"] = Field("auto", description="image fidelity")


class OpenAICaptioner(HostedCaptioner):
    """GPT-4o-class models through api.openai.com; key from --api-key or OPENAI_API_KEY."""

    name: ClassVar[str] = "openai"
    description: ClassVar[str] = "OpenAI vision models (Chat Completions), e.g. openai:gpt-4o-mini"
    Options: ClassVar[type[BackendOptions]] = OpenAIOptions
    provider_name: ClassVar[str] = "openai"

    def detail(self) -> str | None:
        return cast(OpenAIOptions, self.options).detail


class OpenAICompatibleCaptioner(OpenAICaptioner):
    """A vision model on any OpenAI-protocol server (vLLM, Ollama, llama.cpp, LM Studio).

    Needs ``--base-url http://HOST:PORT/v1``; the key is optional and comes from --api-key or
    OPENAI_COMPATIBLE_API_KEY (never OPENAI_API_KEY, which must not leak to other servers).
    """

    name: ClassVar[str] = "openai-compatible"
    description: ClassVar[str] = "any OpenAI-protocol server: openai-compatible:NAME --base-url URL"
    provider_name: ClassVar[str] = "openai-compatible"
