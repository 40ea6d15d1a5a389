"""Read a source's bytes: a local file or a URL, with the size limit applied to both."""

from __future__ import annotations

from dataclasses import dataclass

from captionkit.errors import ImageDecodeError, InputError
from captionkit.inputs.sources import Source


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 50 * 1024 * 1024
    timeout: float = 30.0


def read_source(source: Source, limits: FetchLimits | None = None) -> bytes:
    """The raw bytes of ``source``; raises a per-image error (never aborts the run)."""
    limits = limits or FetchLimits()
    if source.url is not None:
        from captionkit.http import download

        try:
            return download(source.url, max_bytes=limits.max_bytes, timeout=limits.timeout)
        except InputError as exc:
            raise ImageDecodeError(str(exc)) from None
    assert source.path is not None
    try:
        size = source.path.stat().st_size
        if size > limits.max_bytes:
            raise ImageDecodeError(f"{size:,} bytes is over the {limits.max_bytes:,}-byte limit")
        return source.path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError("no such file") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a directory") from None
