"""Bytes -> a clean RGB ``PIL.Image``: the one image decoder of captionkit.

Every backend receives the same, already-normalised pixels: EXIF orientation applied, first
frame of animations, alpha composited on white, CMYK/16-bit/palette converted to 8-bit RGB,
and a decompression-bomb guard that reads the header before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import threading
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
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit and float greyscale: map the format's range to 8 bits (convert() clips).
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (
            arr.min() >= 0 and arr.max() <= 65535 and img.mode == "I"
        ):
            arr = arr / 257.0
        elif img.mode == "F" and arr.min() >= 0 and arr.max() <= 1:
            arr = arr * 255.0
        else:
            low, high = float(arr.min()), float(arr.max())
            arr = (arr - low) * (255.0 / (high - low or 1.0))
        return PILImage.fromarray(np.clip(arr.round(), 0, 255).astype("uint8")).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = PILImage.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


_PILLOW_GUARD_LOCK = threading.Lock()


def _open_without_pillow_guard(data: bytes) -> Image:
    """Parse the header with Pillow's global bomb guard lifted for this one call.

    Pillow refuses at open() beyond twice its own global limit; lifting that limit for good
    would disarm it for every other Pillow user in the process, so it is lifted under a lock
    and restored at once. Only the header is read here; :func:`check_size` then decides.
    """
    from PIL import Image as PILImage

    with _PILLOW_GUARD_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            return PILImage.open(io.BytesIO(data))
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved


def check_size(img: Image, limits: DecodeLimits) -> None:
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


def normalize_image(img: Image, limits: DecodeLimits | None = None) -> Image:
    """An opened image -> upright 8-bit RGB; also the path for ``PIL.Image`` API inputs."""
    from PIL import ImageOps

    check_size(img, limits or DecodeLimits())
    return _to_rgb(ImageOps.exif_transpose(img) or img)


def decode_image(
    data: bytes, limits: DecodeLimits | None = None, *, draft: int | None = None
) -> Image:
    """Decode ``data`` or raise :class:`ImageDecodeError` with a short reason.

    ``draft``: the side the model's processor resizes to (224 for ViT). A JPEG then decodes
    at 1/2, 1/4 or 1/8 scale in libjpeg's DCT (Pillow's ``draft``), but never below ``draft``
    on either side, so the processor's own resize still has at least the pixels it keeps: a
    12 MP photo for a 224 px model decodes ~8x less data. Other formats ignore it. The size
    limits judge the full, stored size (a bomb stays a bomb).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    limits = limits or DecodeLimits()
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            try:
                img: PILImage.Image = PILImage.open(io.BytesIO(data))
            except PILImage.DecompressionBombError:
                img = _open_without_pillow_guard(data)  # our limit decides, and says the size
            check_size(img, limits)
            if getattr(img, "is_animated", False):
                img.seek(0)
            if draft and img.format == "JPEG":
                # A square request: every side stays >= draft whatever the EXIF rotation.
                img.draft("RGB", (draft, draft))
            img.load()
            return normalize_image(img, limits)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageDecodeError(f"corrupt image: {reason}") from None
