"""Read a source's bytes: a local file or a URL, with the file-size limit applied to both."""

from __future__ import annotations

import stat
from dataclasses import dataclass

from captionkit.errors import ImageDecodeError, InputError
from captionkit.http import over_limit_message
from captionkit.inputs.sources import Source

#: How a user lifts the file-size limit; ends every over-limit message.
LIMIT_HINT = "raise it with --max-file-mb"


@dataclass(frozen=True)
class FetchLimits:
    """Per-image limits on reading bytes.

    ``max_bytes`` is the file-size limit for local files and URLs alike (a 2 GB TIFF on disk
    would fill memory just as a 2 GB download would). ``timeout`` bounds a URL's connection,
    each read, and the whole download.
    """

    max_bytes: int = 50 * 1024 * 1024
    timeout: float = 30.0


def read_source(source: Source, limits: FetchLimits | None = None) -> bytes:
    """The raw bytes of ``source``; raises a per-image error (never aborts the run).

    A file that vanished since it was listed (a stale line of a stdin list, a file deleted
    while its folder is captioned) is that image's failure, not the run's.
    """
    limits = limits or FetchLimits()
    if source.url is not None:
        from captionkit.http import download

        try:
            return download(
                source.url,
                max_bytes=limits.max_bytes,
                timeout=limits.timeout,
                limit_hint=LIMIT_HINT,
            )
        except InputError as exc:
            raise ImageDecodeError(str(exc)) from None
    assert source.path is not None
    path = source.path
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageDecodeError("is a directory")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise ImageDecodeError("not a regular file")
        if info.st_size > limits.max_bytes:
            raise ImageDecodeError(too_large(path.name, info.st_size, limits.max_bytes))
        with open(path, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)  # the file may have grown since stat()
        if len(data) > limits.max_bytes:
            raise ImageDecodeError(too_large(path.name, None, limits.max_bytes))
        return data
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageDecodeError("broken symlink: the file it points to is gone") from None
        raise ImageDecodeError("no such file") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a directory") from None
    except OSError as exc:  # a symlink loop, a path through a file, an I/O error
        raise ImageDecodeError(f"cannot read: {exc.strerror or type(exc).__name__}") from None


def too_large(name: str, size: int | None, limit: int) -> str:
    """``photo.tif: 73.2 MB is over the 50 MB file-size limit (raise it with --max-file-mb)``."""
    return f"{name}: {over_limit_message(size, limit, LIMIT_HINT)}"
