"""captionkit: turn images into good captions.

The public Python API is :func:`caption` and :func:`load_captioner` (see ``captionkit.api``);
they are imported lazily so that ``import captionkit`` and ``captionkit --help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "CaptionRequest",
    "CaptionResult",
    "Decoding",
    "__version__",
    "caption",
    "caption_stages",
    "load_captioner",
]

if TYPE_CHECKING:
    from captionkit.api import caption, load_captioner
    from captionkit.multistage import caption_stages
    from captionkit.types import Candidate, CaptionRequest, CaptionResult, Decoding


def __getattr__(name: str) -> Any:
    if name in ("caption", "load_captioner"):
        from captionkit import api

        return getattr(api, name)
    if name == "caption_stages":
        from captionkit import multistage

        return multistage.caption_stages
    if name in ("CaptionRequest", "CaptionResult", "Candidate", "Decoding"):
        from captionkit import types

        return getattr(types, name)
    raise AttributeError(name)
