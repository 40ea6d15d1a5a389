"""``anthropic:MODEL``: Claude through the Messages API.

The wire format is :mod:`captionkit.providers.anthropic`; Claude downsizes images over
1568 px on the long edge, so more is not sent. Messages has no ``n``: N candidates are N
requests.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from captionkit.captioners.api.common import APIOptions, HostedCaptioner
from captionkit.captioners.base import BackendOptions


class AnthropicOptions(APIOptions):
    max_image_side: int = Field(1568, ge=64, description="longest side sent, in pixels")


class AnthropicCaptioner(HostedCaptioner):
    """Claude models; key from --api-key or ANTHROPIC_API_KEY."""

    name: ClassVar[str] = "anthropic"
    description: ClassVar[str] = "Anthropic Claude (Messages API), e.g. anthropic:claude-haiku-4-5"
    Options: ClassVar[type[BackendOptions]] = AnthropicOptions
    provider_name: ClassVar[str] = "anthropic"
