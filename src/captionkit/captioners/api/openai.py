"""OpenAI Chat Completions with image inputs, and any server speaking that protocol.

The image goes as a ``data:image/jpeg;base64,...`` URL in an ``image_url`` content part; the
instruction as a ``text`` part beside it, the system prompt as a ``system`` message. OpenAI
fits an image into 2048x2048 and then its short side to 768 before tiling (``detail:
high``), so sending more than 2048 pixels only costs upload time.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from captionkit.captioners.api.common import (
    CAPTION_SCHEMA,
    APIOptions,
    EncodedImage,
    HostedCaptioner,
)
from captionkit.captioners.base import BackendOptions
from captionkit.llm.openai_compat import Sampling


class OpenAIOptions(APIOptions):
    max_image_side: int = Field(2048, ge=64, description="longest side sent, in pixels")
    detail: Literal["auto", "low", "high"] = Field("auto", description="image fidelity")


class OpenAICaptioner(HostedCaptioner):
    """GPT-4o-class models through api.openai.com; key from --api-key or OPENAI_API_KEY."""

    name: ClassVar[str] = "openai"
    description: ClassVar[str] = "OpenAI vision models (Chat Completions), e.g. openai:gpt-4o-mini"
    Options: ClassVar[type[BackendOptions]] = OpenAIOptions
    provider_name: ClassVar[str] = "openai"
    max_b64_bytes: ClassVar[int] = 20 * 1024 * 1024  # requests may carry up to 50 MB in all

    def build_body(
        self, image: EncodedImage, system: str, instruction: str, sampling: Sampling, json_out: bool
    ) -> dict[str, Any]:
        picture: dict[str, Any] = {"url": image.data_url}
        detail = getattr(self.opts, "detail", "auto")
        if detail != "auto":  # the default; omitted so minimal servers do not choke on it
            picture["detail"] = detail
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": instruction},
                        {"type": "image_url", "image_url": picture},
                    ],
                },
            ],
        }
        if json_out:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "caption", "strict": True, "schema": CAPTION_SCHEMA},
            }
        return self.provider.apply_sampling(body, sampling)

    def image_tokens(self, width: int, height: int) -> int:
        if getattr(self.opts, "detail", "auto") == "low":
            return 85
        scale = min(1.0, 2048 / max(width, height))
        w, h = width * scale, height * scale
        scale = min(1.0, 768 / min(w, h))
        tiles = math.ceil(w * scale / 512) * math.ceil(h * scale / 512)
        return 85 + 170 * tiles


class OpenAICompatibleCaptioner(OpenAICaptioner):
    """A vision model on any OpenAI-protocol server (vLLM, Ollama, llama.cpp, LM Studio).

    Needs ``--base-url http://HOST:PORT/v1``; the key is optional and comes from --api-key or
    OPENAI_COMPATIBLE_API_KEY (never OPENAI_API_KEY, which must not leak to other servers).
    """

    name: ClassVar[str] = "openai-compatible"
    description: ClassVar[str] = "any OpenAI-protocol server: openai-compatible:NAME --base-url URL"
    provider_name: ClassVar[str] = "openai-compatible"
