"""An image as a hosted vendor receives it: resized to its limits, re-encoded, base64.

Shared by every vendor (each supplies its own limits as class attributes of its
:class:`~captionkit.providers.base.Provider`); Pillow is imported only when encoding.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class EncodedImage:
    """An image as sent: base64 JPEG/PNG within the provider's limits."""

    mime: str
    data: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.data}"


def encode_image(
    image: Image,
    *,
    max_side: int,
    quality: int = 85,
    max_pixels: int | None = None,
    max_b64_bytes: int = 5 * 1024 * 1024,
) -> EncodedImage:
    """Resize to the provider's limits and re-encode as JPEG (RGB, transparency on white).

    Sending what the provider would downscale anyway only costs upload time and tokens; a
    body over its byte limit is refused outright, so quality and then size step down.
    """
    from PIL import Image as PILImage

    img = image
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = PILImage.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    while True:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))  # floor: stay within limits
        sized = img if size == img.size else img.resize(size, PILImage.Resampling.LANCZOS)
        for q in (quality, *range(min(quality, 75) - 10, 39, -10)):
            buf = io.BytesIO()
            sized.save(buf, format="JPEG", quality=q, optimize=True)
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            if len(data) <= max_b64_bytes:
                return EncodedImage("image/jpeg", data, *sized.size)
        scale *= 0.7
