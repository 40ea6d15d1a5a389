"""Turn what the user named (files, folders, URLs, ``-`` for stdin) into a lazy stream of sources.

Nothing here reads pixels: a source is only *where* an image is. Folders are walked with
``os.scandir`` one directory at a time, so a million-file tree starts captioning at once and
never sits in memory as a list.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.errors import CaptionkitError, InputError

#: Suffixes taken as images without looking inside (the decoder still checks the content).
IMAGE_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".heif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".tga",
        ".ico",
        ".jp2",
        ".j2k",
    ]
)
#: Suffixes never worth opening (sidecars, metadata): skipped without a read.
NEVER_IMAGES = frozenset(
    [
        ".txt",
        ".json",
        ".jsonl",
        ".csv",
        ".tsv",
        ".md",
        ".toml",
        ".yaml",
        ".yml",
        ".py",
        ".xml",
        ".html",
        ".db",
        ".sqlite",
        ".parquet",
        ".caption",
        ".tags",
        ".log",
        ".zip",
        ".tar",
        ".gz",
        ".pdf",
        ".mp4",
        ".mov",
        ".avi",
        ".mkv",
        ".mp3",
        ".wav",
    ]
)
#: Magic numbers of formats Pillow decodes, for files whose suffix says nothing.
_MAGIC: tuple[bytes, ...] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",  # TIFF
)


@dataclass(frozen=True)
class Source:
    """One image to caption.

    ``key`` is what users see and outputs name; ``rel`` is the path relative to the folder it
    was found under, used to mirror folders into ``--output-dir``.
    """

    key: str
    path: Path | None = None
    url: str | None = None
    rel: Path | None = None
    #: An in-memory ``PIL.Image`` handed to the Python API (no file behind it).
    image: Any = field(default=None, compare=False, repr=False)

    @property
    def is_url(self) -> bool:
        return self.url is not None


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def sniff_image(path: Path) -> bool:
    """True when the first bytes are a known image signature (suffix-less or odd files)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"heic", b"heix", b"mif1"):
        return True
    return head.startswith(_MAGIC)


def looks_like_image(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix in NEVER_IMAGES:
        return False
    return sniff_image(path)


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _skip(skipped: Counter[str] | None, reason: str) -> None:
    if skipped is not None:
        skipped[reason] += 1


def _unusable_reason(entry: os.DirEntry[str]) -> str | None:
    """Why a directory entry that is neither a folder nor a file is skipped, if worth saying."""
    try:
        if entry.is_symlink() and not os.path.exists(entry.path):
            return "broken symlink"
    except OSError:
        return None
    return None


def walk_folder(
    root: Path,
    *,
    recursive: bool = True,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    follow_symlinks: bool = False,
    skipped: Counter[str] | None = None,
    warn: bool = True,
) -> Iterator[Source]:
    """Yield images under ``root`` depth-first, each directory's entries in name order.

    Hidden files and folders (leading dot) are skipped: they hold thumbnails and caches far
    more often than photos. ``skipped``, when given, counts what was passed over so the user
    can be told: ``"hidden"`` (a hidden folder counts once), ``"broken symlink"``, and
    ``"not an image"`` (a file whose suffix says nothing and whose content is no known image;
    sidecars and other known non-image suffixes are expected beside photos and not counted).
    Files left out by ``include``/``exclude`` are not counted: the user asked for that.
    ``warn`` False keeps an unreadable folder quiet (a second walk, counting for the ETA).
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if warn:
                print(f"captionkit: cannot list {folder}: {exc.strerror}", file=sys.stderr)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                _skip(skipped, "hidden")
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=follow_symlinks):
                    if recursive:
                        subdirs.append(path)
                    continue
                if not entry.is_file():
                    reason = _unusable_reason(entry)
                    if reason:
                        _skip(skipped, reason)
                    continue
            except OSError:
                continue
            rel = path.relative_to(root)
            rel_s = rel.as_posix()
            if include and not _matches(rel_s, include):
                continue
            if exclude and _matches(rel_s, exclude):
                continue
            if looks_like_image(path):
                yield Source(key=str(path), path=path, rel=rel)
            elif path.suffix.lower() not in NEVER_IMAGES:
                _skip(skipped, "not an image")
        stack.extend(reversed(subdirs))


def _stdin_lines(stream: Iterable[str]) -> Iterator[str]:
    for line in stream:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def iter_sources(
    inputs: Iterable[str],
    *,
    recursive: bool = True,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    stdin: Iterable[str] | None = None,
    skipped: Counter[str] | None = None,
) -> Iterator[Source]:
    """Expand user inputs lazily, in the order given.

    A missing path given as an argument raises :class:`InputError` when it is reached (the
    CLI checks its arguments before the model loads). A path read from a stdin list is
    yielded even when it is missing: ``find ... | captionkit caption -`` may list a file
    that is deleted before it is read, and that file is one image's failure, reported when
    it is read, not the end of the run. ``stdin`` is the list's lines (default
    ``sys.stdin``); blank lines and ``#`` comments are ignored. ``skipped`` counts what
    folder walks pass over (see :func:`walk_folder`).
    """
    walk = {"recursive": recursive, "include": include, "exclude": exclude, "skipped": skipped}
    return _expand(inputs, walk, stdin, listed=False, warn=True)


def _expand(
    inputs: Iterable[str],
    walk: dict[str, Any],
    stdin: Iterable[str] | None,
    *,
    listed: bool,
    warn: bool,
) -> Iterator[Source]:
    for item in inputs:
        if item == "-" and not listed:
            stream = stdin if stdin is not None else sys.stdin
            yield from _expand(_stdin_lines(stream), walk, None, listed=True, warn=warn)
            continue
        if is_url(item):
            yield Source(key=item, url=item)
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            yield from walk_folder(path, warn=warn, **walk)
        elif path.is_file() or listed:
            # Listed but missing or odd: reading it gives that image its own error.
            yield Source(key=str(path), path=path, rel=Path(path.name))
        elif path.exists():
            raise InputError(f"{item}: not a regular file or folder")
        else:
            raise InputError(f"{item}: no such file or folder")


def count_sources(inputs: Iterable[str], **kwargs: Any) -> int:
    """Count what :func:`iter_sources` would yield (run in a background thread for the ETA).

    Never raises for a bad input (the run itself reports it) and never adds to a ``skipped``
    counter (the run's own walk fills it; counting twice would double every figure). Stdin
    is left out: it can be read only once.
    """
    kwargs.pop("skipped", None)
    kwargs.pop("stdin", None)
    walk = {
        "recursive": kwargs.get("recursive", True),
        "include": kwargs.get("include", ()),
        "exclude": kwargs.get("exclude", ()),
        "skipped": None,
    }
    total = 0
    for item in inputs:
        if item == "-":
            continue
        try:
            total += sum(1 for _ in _expand([item], walk, None, listed=False, warn=False))
        except (CaptionkitError, OSError):
            continue
    return total
