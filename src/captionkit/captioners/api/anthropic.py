"""Anthropic Messages API with base64 image content blocks.

Body: ``model``, ``max_tokens`` (required), top-level ``system``, one ``user`` message whose
content is an ``image`` block (``source``: base64, media type, data) followed by a ``text``
block, as the vision guide recommends (image before text). Headers: ``x-api-key`` and
``anthropic-version: 2023-06-01``. Claude downsizes images over 1568 px on the long edge or
about 1.15 megapixels and refuses images over 5 MB, so both limits are applied before sending.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from captionkit.captioners.api.common import (
    CAPTION_SCHEMA,
    APIOptions,
    EncodedImage,
    HostedCaptioner,
)
from captionkit.captioners.base import BackendOptions
from captionkit.llm.openai_compat import Sampling


class AnthropicOptions(APIOptions):
    max_image_side: int = Field(1568, ge=64, description="longest side sent, in pixels")


class AnthropicCaptioner(HostedCaptioner):
    """Claude models; key from --api-key or ANTHROPIC_API_KEY."""

    name: ClassVar[str] = "anthropic"
    description: ClassVar[str] = "Anthropic Claude (Messages API), e.g. anthropic:claude-haiku-4-5"
    Options: ClassVar[type[BackendOptions]] = AnthropicOptions
    provider_name: ClassVar[str] = "anthropic"
    supports_n: ClassVar[bool] = False  # one answer per request: N candidates are N requests
    max_b64_bytes: ClassVar[int] = 5 * 1024 * 1024
    max_pixels: ClassVar[int | None] = 1_150_000

    def build_body(
        self, image: EncodedImage, system: str, instruction: str, sampling: Sampling, json_out: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "system": system,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": image.mime,
                                "data": image.data,
                            },
                        },
                        {"type": "text", "text": instruction},
                    ],
                }
            ],
        }
        if json_out:  # structured outputs (GA): the answer is JSON matching the schema
            body["output_config"] = {"format": {"type": "json_schema", "schema": CAPTION_SCHEMA}}
        return self.provider.apply_sampling(body, sampling)

    def image_tokens(self, width: int, height: int) -> int:
        return -(-width * height // 750)
