"""``gemini:MODEL``: Gemini ``generateContent`` with the image inline.

The wire format is :mod:`captionkit.providers.gemini`; Gemini scales images to fit
3072x3072, so images are sent at most 3072 pixels on their long side.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from captionkit.captioners.api.common import APIOptions, HostedCaptioner
from captionkit.captioners.base import BackendOptions
from captionkit.providers.gemini import GEMINI_SCHEMA

__all__ = ["GEMINI_SCHEMA", "GeminiCaptioner", "GeminiOptions"]


class GeminiOptions(APIOptions):
    max_image_side: int = Field(3072, ge=64, description="longest side sent, in pixels")


class GeminiCaptioner(HostedCaptioner):
    """Gemini models; key from --api-key, GEMINI_API_KEY or GOOGLE_API_KEY."""

    name: ClassVar[str] = "gemini"
    description: ClassVar[str] = "Google Gemini (generateContent), e.g. gemini:gemini-2.5-flash"
    Options: ClassVar[type[BackendOptions]] = GeminiOptions
    provider_name: ClassVar[str] = "gemini"
