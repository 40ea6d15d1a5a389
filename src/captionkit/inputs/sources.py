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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from captionkit.errors import CaptionkitError, InputError

if TYPE_CHECKING:
    from collections.abc import Callable

    from captionkit.inputs.video import VideoOptions

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


_EMPTY_META: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Source:
    """One image to caption.

    ``key`` is what users see and outputs name; ``rel`` is the path relative to the folder it
    was found under, used to mirror folders into ``--output-dir``. ``meta`` carries what the
    input knew beside the pixels (a table row's columns; a video frame's
    ``{"video": path, "t": seconds, "frame": index}``); it is read-only, and left out of
    equality and hashing so two sources are still the same when their keys agree.
    """

    key: str
    path: Path | None = None
    url: str | None = None
    rel: Path | None = None
    #: An in-memory ``PIL.Image`` handed to the Python API (no file behind it).
    image: Any = field(default=None, compare=False, repr=False)
    #: Read-only extra facts about this source (see the class docstring).
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_META, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A plain dict handed in is frozen into a read-only view, so a Source stays immutable.
        if not isinstance(self.meta, MappingProxyType):
            object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __reduce__(self) -> tuple[Any, ...]:
        # A read-only view does not pickle; rebuild from a plain copy (process pools send sources).
        fields = {f: getattr(self, f) for f in ("key", "path", "url", "rel", "image")}
        return (_rebuild_source, (fields, dict(self.meta)))

    @property
    def is_url(self) -> bool:
        return self.url is not None


def _rebuild_source(fields: dict[str, Any], meta: dict[str, Any]) -> Source:
    return Source(**fields, meta=meta)


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
    videos: bool = False,
) -> Iterator[Source]:
    """Yield images under ``root`` depth-first, each directory's entries in name order.

    Hidden files and folders (leading dot) are skipped: they hold thumbnails and caches far
    more often than photos. ``skipped``, when given, counts what was passed over so the user
    can be told: ``"hidden"`` (a hidden folder counts once), ``"broken symlink"``, and
    ``"not an image"`` (a file whose suffix says nothing and whose content is no known image;
    sidecars and other known non-image suffixes are expected beside photos and not counted).
    Files left out by ``include``/``exclude`` are not counted: the user asked for that.
    ``warn`` False keeps an unreadable folder quiet (a second walk, counting for the ETA).
    ``videos`` True also yields video files (see :mod:`captionkit.inputs.video`) as sources
    of their own, for :func:`iter_sources` to expand into frames; otherwise they are passed
    over like other non-image files.
    """
    if videos:
        from captionkit.inputs.video import VIDEO_SUFFIXES, sniff_video
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
            suffix = path.suffix.lower()
            if (videos and suffix in VIDEO_SUFFIXES) or looks_like_image(path):
                yield Source(key=str(path), path=path, rel=rel)
            elif suffix in NEVER_IMAGES:
                continue
            elif videos and sniff_video(path):
                yield Source(key=str(path), path=path, rel=rel)
            else:
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
    video: VideoOptions | None = None,
    video_done: Callable[[Source], bool] | None = None,
) -> Iterator[Source]:
    """Expand user inputs lazily, in the order given.

    A missing path given as an argument raises :class:`InputError` when it is reached (the
    CLI checks its arguments before the model loads). A path read from a stdin list is
    yielded even when it is missing: ``find ... | captionkit caption -`` may list a file
    that is deleted before it is read, and that file is one image's failure, reported when
    it is read, not the end of the run. ``stdin`` is the list's lines (default
    ``sys.stdin``); blank lines and ``#`` comments are ignored. ``skipped`` counts what
    folder walks pass over (see :func:`walk_folder`).

    ``video`` set: video files (named, listed, or found in folders) are expanded into their
    sampled frames, each a source with its pixels in ``.image``
    (:func:`captionkit.inputs.video.expand_video`); None: videos are not inputs (folders pass
    over them, a named one fails as an unreadable image). ``video_done``, given a source for
    a whole video (``meta == {"video": key}``), says the outputs already hold that video: it
    is then yielded as that one source, undecoded, for the engine to skip (pass the same test
    the engine skips with: every sink's ``already_done``).
    """
    walk = {"recursive": recursive, "include": include, "exclude": exclude, "skipped": skipped}
    if video is not None:
        walk["videos"] = True
    return _expand(inputs, walk, stdin, listed=False, warn=True, video=video, done=video_done)


def _expand(
    inputs: Iterable[str],
    walk: dict[str, Any],
    stdin: Iterable[str] | None,
    *,
    listed: bool,
    warn: bool,
    video: VideoOptions | None = None,
    done: Callable[[Source], bool] | None = None,
) -> Iterator[Source]:
    found = _expand_paths(inputs, walk, stdin, listed=listed, warn=warn)
    from captionkit.inputs.video import VIDEO_SUFFIXES, expand_video, is_video, left_out

    if video is None:
        for source in found:  # folders pass over videos: any video here was named
            if source.path is not None and source.path.suffix.lower() in VIDEO_SUFFIXES:
                yield left_out(source.path)
            else:
                yield source
        return

    for source in found:
        if source.path is None or not is_video(source.path):
            yield source
            continue
        whole = Source(key=source.key, path=source.path, rel=source.rel, meta={"video": source.key})
        if done is not None and done(whole):
            yield whole  # the outputs hold it already: the engine skips it, nothing decoded
            continue
        yield from expand_video(source.path, video, rel=source.rel, key=source.key)


def _expand_paths(
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
            yield from _expand_paths(_stdin_lines(stream), walk, None, listed=True, warn=warn)
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
    video: VideoOptions | None = kwargs.get("video")
    walk = {
        "recursive": kwargs.get("recursive", True),
        "include": kwargs.get("include", ()),
        "exclude": kwargs.get("exclude", ()),
        "skipped": None,
    }
    if video is not None:
        walk["videos"] = True
    total = 0
    for item in inputs:
        if item == "-":
            continue
        try:
            found = _expand_paths([item], walk, None, listed=False, warn=False)
            total += sum(_weight(source, video) for source in found)
        except (CaptionkitError, OSError):
            continue
    return total


def _weight(source: Source, video: VideoOptions | None) -> int:
    """Sources one found file stands for: 1, or a video's frames counted from its header."""
    if video is None or source.path is None:
        return 1
    from captionkit.inputs.video import estimate_frames, is_video

    return estimate_frames(source.path, video) if is_video(source.path) else 1
