"""Bytes -> a clean RGB ``PIL.Image``: the one image decoder of captionkit.

Every backend receives the same, already-normalised pixels: EXIF orientation applied, first
frame of animations, alpha composited on white, CMYK/16-bit/palette converted to 8-bit RGB,
and a decompression-bomb guard that reads the header before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from captionkit.errors import ImageDecodeError

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: a 10000x10000 scan passes, a forged header does not
DEFAULT_MIN_SIDE = 8


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _to_rgb(img: Image) -> Image:
    from PIL import Image as PILImage

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to the 8-bit range rather than clipping to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() or 1.0
        return PILImage.fromarray((arr * (255.0 / top)).astype("uint8")).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = PILImage.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def decode_image(data: bytes, limits: DecodeLimits | None = None) -> Image:
    """Decode ``data`` or raise :class:`ImageDecodeError` with a short reason."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    limits = limits or DecodeLimits()
    if not data:
        raise ImageDecodeError("empty file")
    # Our own guard below replaces Pillow's global one, so --max-pixels can go above it.
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(data))
            width, height = img.size
            if width * height > limits.max_pixels:
                raise ImageDecodeError(
                    f"{width}x{height} is over the {limits.max_pixels:,}-pixel limit "
                    "(raise --max-pixels if the image is genuine)"
                )
            if min(width, height) < limits.min_side:
                raise ImageDecodeError(
                    f"{width}x{height} is too small to caption (min side {limits.min_side} px)"
                )
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageDecodeError(f"corrupt image: {reason}") from None
