"""Gemini ``generateContent`` with the image as inline base64 data.

Body: ``systemInstruction``, one ``user`` content with an ``inline_data`` part (mime type +
base64) and a ``text`` part, sampling in ``generationConfig``; the key travels in the
``x-goog-api-key`` header. Gemini scales images to fit 3072x3072 and inline requests are
limited to about 20 MB, so images are sent at most 3072 pixels on their long side.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from captionkit.captioners.api.common import APIOptions, EncodedImage, HostedCaptioner
from captionkit.captioners.base import BackendOptions
from captionkit.llm.openai_compat import Sampling

#: Gemini's responseSchema is an OpenAPI-subset Schema object (upper-case type names).
GEMINI_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "caption": {"type": "STRING"},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
    },
    "required": ["caption", "tags"],
}


class GeminiOptions(APIOptions):
    max_image_side: int = Field(3072, ge=64, description="longest side sent, in pixels")


class GeminiCaptioner(HostedCaptioner):
    """Gemini models; key from --api-key, GEMINI_API_KEY or GOOGLE_API_KEY."""

    name: ClassVar[str] = "gemini"
    description: ClassVar[str] = "Google Gemini (generateContent), e.g. gemini:gemini-2.5-flash"
    Options: ClassVar[type[BackendOptions]] = GeminiOptions
    provider_name: ClassVar[str] = "gemini"
    max_b64_bytes: ClassVar[int] = 14 * 1024 * 1024  # the whole inline request stays < 20 MB

    def build_body(
        self, image: EncodedImage, system: str, instruction: str, sampling: Sampling, json_out: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "systemInstruction": {"parts": [{"text": system}]},
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"inline_data": {"mime_type": image.mime, "data": image.data}},
                        {"text": instruction},
                    ],
                }
            ],
        }
        self.provider.apply_sampling(body, sampling)
        if json_out:
            body["generationConfig"]["responseMimeType"] = "application/json"
            body["generationConfig"]["responseSchema"] = GEMINI_SCHEMA
        return body

    def image_tokens(self, width: int, height: int) -> int:
        if width <= 384 and height <= 384:
            return 258
        return 258 * math.ceil(width / 768) * math.ceil(height / 768)
