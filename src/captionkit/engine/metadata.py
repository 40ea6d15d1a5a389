"""Captions inside the image files: an XMP sidecar, or XMP embedded in the image, by exiftool.

Photo managers (digiKam, darktable, Lightroom, Immich, Windows Explorer) never read ``photo.txt``;
they read XMP. This sink writes, for each captioned image:

* ``dc:description`` (x-default): the caption. Lightroom's and digiKam's "Caption"; Windows
  Explorer shows it as the Title of a JPEG/TIFF that has no title of its own;
* ``Iptc4xmpCore:AltTextAccessibility`` (x-default): the same text as the IPTC 2021.1 alt-text
  field that CMSs and screen-reader workflows read;
* ``dc:subject``: the backend's tags (``result.extra["tags"]``, a tagger's names), added to the
  keywords already there, never duplicated, never removed;
* ``photoshop:CaptionWriter`` = ``captionkit 0.1.0 (hf:org/model)``: IPTC Core's "Description
  Writer", the standard field for *who wrote the description*. ``xmp:CreatorTool`` was
  considered and rejected: it names the tool that made the image (camera firmware, Photoshop),
  and overwriting it would destroy that fact.

Modes: ``"xmp"`` writes a sidecar beside the image and never touches the image. Its name is
``photo.jpg.xmp`` (``sidecar_name="full"``, the default: digiKam, darktable, Immich; one sidecar
per image file, so ``photo.jpg`` and ``photo.png`` never share one, nor does a JPEG share a raw
file's Lightroom sidecar) or ``photo.xmp`` (``"stem"``: Capture One, Lightroom for raw files,
with the same clash rule as ``.txt`` sidecars: ``photo.jpg.xmp`` when two images share the
stem). Lightroom reads no sidecar for JPEG/PNG/TIFF: use ``"embed"`` for it. ``"embed"`` writes
the XMP into JPEG, PNG, WebP and TIFF files in place; other formats (GIF, BMP...) get the
``photo.gif.xmp`` sidecar instead and are counted in :attr:`MetadataSink.fallbacks`.

Safety: exiftool keeps every other tag, edits only metadata segments (pixel data is copied
byte for byte, never re-encoded), and writes a temporary file it renames over the original
(``-overwrite_original``), so a failure or a kill leaves the original whole; ``keep_mtime``
adds ``-P``. A description that captionkit did not write (someone's own caption) is kept unless
``replace_foreign=True``; those images are counted in :attr:`MetadataSink.kept`. Reruns are
idempotent (keywords are removed then added, the rest overwritten).

Speed: ``processes`` long-lived ``exiftool -stay_open`` processes (default: half the CPUs,
1 to 4) share each batch, one command per image, one round trip per :meth:`flush` (plus one
to read the descriptions already there); arguments travel in exiftool's argument-file syntax
with the file name as raw bytes (``-charset filename=utf8``), so non-UTF-8 names work. On
Linux each process dies with captionkit, ``kill -9`` included. How the processes are started,
fed and stopped is :mod:`captionkit.engine.exiftool`.
Errors: a folder or file that cannot be written stops the run (:class:`OutputError`, like
``.txt`` sidecars; the results store keeps the captions); a file exiftool cannot parse fails
alone and is listed in :attr:`MetadataSink.failures`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from captionkit import __version__
from captionkit.engine.exiftool import Exiftool, arg_line, check_exiftool, file_arg, json_tags
from captionkit.engine.exiftool import ExiftoolMissingError as ExiftoolMissingError  # re-export
from captionkit.engine.sinks import SidecarSink, Sink, input_folders, probe_folder
from captionkit.errors import ConfigError, OutputError
from captionkit.inputs.sources import Source
from captionkit.types import CaptionResult

MODES = ("xmp", "embed")
SIDECAR_NAMES = ("full", "stem")

#: The tags written, as exiftool names them (``exiftool -G1`` prints these keys).
TAG_DESCRIPTION = "XMP-dc:Description"
TAG_ALT_TEXT = "XMP-iptcCore:AltTextAccessibility"
TAG_KEYWORDS = "XMP-dc:Subject"
TAG_WRITER = "XMP-photoshop:CaptionWriter"
WRITER_PREFIX = "captionkit"

#: Containers whose embedded XMP photo managers read, by their first bytes.
_EMBED_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
#: exiftool's words for a failure of the folder or file, not of the image: these stop the run.
_OUTPUT_FAILURES = (
    "error creating",
    "error renaming",
    "error opening",
    "permission denied",
    "read-only file system",
    "no space left",
    "disk quota",
    "error writing",
)
_DONE = re.compile(r"\b1 image files (updated|created|unchanged)\b")


def embed_type(path: Path) -> str | None:
    """``JPEG``/``PNG``/``WebP``/``TIFF`` when XMP can be embedded in ``path``, else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _EMBED_MAGIC:
        if head.startswith(magic):
            return name
    return None


def _kind(path: Path) -> str:
    """A short name of a format that cannot hold embedded XMP (for the fallback count)."""
    suffix = path.suffix.lstrip(".").upper()
    return suffix or "no suffix"


def tag_names(result: CaptionResult) -> list[str]:
    """Keywords from ``result.extra["tags"]`` (``[[name, score, category], ...]`` or names):
    underscores as spaces, one line each, no duplicates, in the backend's order."""
    raw = result.extra.get("tags") if isinstance(result.extra, dict) else None
    names: list[str] = []
    for item in raw or ():
        name = item if isinstance(item, str) else (item[0] if item else None)
        if not isinstance(name, str):
            continue
        name = " ".join(name.replace("_", " ").split())
        if name and name not in names:
            names.append(name)
    return names


def writer_of(result: CaptionResult) -> str:
    """``captionkit 0.1.0 (hf:org/model)``: the value of ``photoshop:CaptionWriter``."""
    model = result.model or ""
    if result.backend and model.startswith(f"{result.backend}:"):  # "grounded:ssd+template"
        model = model[len(result.backend) + 1 :]
    spec = ":".join(p for p in (result.backend, model) if p)
    return f"{WRITER_PREFIX} {__version__} ({spec})" if spec else f"{WRITER_PREFIX} {__version__}"


def _ours(writer: str) -> bool:
    return writer == WRITER_PREFIX or writer.startswith(WRITER_PREFIX + " ")


# -- one image's command -------------------------------------------------------------------------
@dataclass
class _Job:
    source: str  # what users see (the source key)
    image: Path
    target: Path  # the file exiftool edits (the image, or its sidecar)
    args: list[bytes]
    tmp: Path | None = None  # a new sidecar is made here, then renamed to ``target``
    fallback: str | None = None  # embed mode: the format that could not hold XMP
    name: bytes = b""  # ``target`` (or ``tmp``) as an argument-file line
    guard: bool = False  # read the description first: someone else's is kept


class MetadataSink(Sink):
    """Writes each caption into its image's XMP (``mode="embed"``) or an XMP sidecar
    (``mode="xmp"``); see the module docstring for the fields and the rules."""

    def __init__(
        self,
        mode: str = "xmp",
        *,
        keep_mtime: bool = False,
        sidecar_name: str = "full",
        replace_foreign: bool = False,
        exiftool: str | None = None,
        processes: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"--metadata must be one of {', '.join(MODES)}")
        if sidecar_name not in SIDECAR_NAMES:
            raise ConfigError(f"--xmp-name must be one of {', '.join(SIDECAR_NAMES)}")
        self.mode = mode
        #: exiftool processes sharing each batch (default: half the CPUs, 1 to 4).
        self.processes = max(1, processes or min(4, (os.cpu_count() or 2) // 2))
        self.keep_mtime = keep_mtime
        self.sidecar_name = sidecar_name
        self.replace_foreign = replace_foreign
        self._exe = exiftool
        self._tools: list[Exiftool] = []  # started at the first flush
        self._lock = threading.Lock()
        self._names = SidecarSink(extension=".xmp") if sidecar_name == "stem" else None
        self._jobs: list[_Job] = []
        self._pending: set[Path] = set()
        self._values: tempfile.TemporaryDirectory[str] | None = None
        self._nvalues = 0
        #: Images written (embedded or sidecar), and those whose own description was kept.
        self.written = 0
        self.kept = 0
        #: Embed mode: images whose format cannot hold XMP (sidecar written), by format.
        self.fallbacks: Counter[str] = Counter()
        #: ``(source, one-line reason)`` for images whose metadata could not be written.
        self.failures: list[tuple[str, str]] = []
        #: Results with no local image file (URLs, in-memory images, video frames, gone).
        self.skipped = 0

    # -- names -----------------------------------------------------------------------------
    def sidecar_path(self, image: Path) -> Path:
        """``photo.jpg.xmp`` (``full``), or ``photo.xmp`` (``stem``; on a clash the full name)."""
        if self._names is not None:
            target = self._names.path_for(Source(key=str(image), path=image))
            if target is not None:
                return target
        return image.with_name(image.name + ".xmp")

    # -- building commands -----------------------------------------------------------------
    def _value(self, tag: str, text: str) -> bytes:
        """``-TAG=VALUE``; a value with a line break goes through a file (``-TAG<=FILE``):
        argument files are line-based and their C-string form mangles ``$`` and ``@``."""
        text = text.replace("\x00", "")
        if "\n" not in text and "\r" not in text:
            return arg_line(f"-{tag}={text}")
        if self._values is None:
            self._values = tempfile.TemporaryDirectory(prefix="captionkit-xmp-")
        self._nvalues += 1
        path = Path(self._values.name) / f"v{self._nvalues}.txt"
        path.write_bytes(arg_line(text))
        return arg_line(f"-{tag}<=") + os.fsencode(path)

    def _args(self, result: CaptionResult, text: str) -> list[bytes]:
        args: list[bytes] = []
        args.append(self._value(TAG_DESCRIPTION, text))
        args.append(self._value(TAG_ALT_TEXT, text))
        args.append(self._value(TAG_WRITER, writer_of(result)))
        for name in tag_names(result):
            args.append(arg_line(f"-{TAG_KEYWORDS}-={name}"))
            args.append(arg_line(f"-{TAG_KEYWORDS}+={name}"))
        return args

    def write(self, result: CaptionResult, source: Source) -> None:
        if not result.ok or not (result.text or "").strip():
            return
        if source.path is None or source.meta.get("video") is not None:
            self.skipped += 1  # a URL, an in-memory image or a video frame: no file of its own
            return
        image = Path(source.path)
        fallback = None
        if self.mode == "embed":
            kind = embed_type(image)
            if kind is None:
                fallback = _kind(image)
            elif not os.access(image, os.W_OK):
                self.flush()  # the batch's other images first: nothing is lost
                raise OutputError(
                    f"cannot embed metadata in {image}: the file is read-only; make it "
                    "writable (chmod u+w) or write sidecars with --metadata xmp. Captions made "
                    "so far are kept in the results store: rerun to resume"
                )
        target = image if self.mode == "embed" and fallback is None else self.sidecar_path(image)
        if target in self._pending:
            # The same file twice in one batch (a repeated path, several stored results for
            # one image): write the first before queueing the second, so the last one wins.
            self.flush()
        with contextlib.suppress(OSError):
            # exiftool's temporary file, left by a killed run, would block every later write
            target.with_name(target.name + "_exiftool_tmp").unlink()
        tmp = None
        edit = target
        if target is not image and not target.exists():
            tmp = target.with_name(f".{target.name}.tmp.xmp")  # exiftool creates it; we rename
            with contextlib.suppress(OSError):
                tmp.unlink()  # a killed run's leftover
            edit = tmp
        name = file_arg(edit)
        if name is None:
            self.failures.append(
                (
                    source.key,
                    "its file name has a line break and '$' or '@', which exiftool "
                    "cannot be given; rename it",
                )
            )
            return
        args = [*self._args(result, (result.text or "").strip()), name]
        guard = tmp is None and not self.replace_foreign  # a file that may hold a description
        self._jobs.append(_Job(source.key, image, target, args, tmp, fallback, name, guard))
        self._pending.add(target)

    # -- running them ----------------------------------------------------------------------
    def _exiftools(self) -> list[Exiftool]:
        if not self._tools:
            exe, _ = check_exiftool(self._exe)
            common = ["-overwrite_original", "-charset", "filename=utf8", "-charset", "utf8"]
            if self.keep_mtime:
                common.append("-P")
            self._tools = [Exiftool(exe, common) for _ in range(self.processes)]
        return self._tools

    def flush(self) -> None:
        jobs, self._jobs = self._jobs, []
        self._pending = set()
        if not jobs:
            return
        try:
            done = self._run(jobs)
            stop: OutputError | None = None
            for job, output in done:
                problem = self._settle(job, output)
                if problem is not None and stop is None:
                    stop = problem
            if stop is not None:
                raise stop
        finally:
            for job in jobs:
                if job.tmp is not None:
                    with contextlib.suppress(OSError):
                        job.tmp.unlink()
            if self._values is not None:
                self._values.cleanup()
                self._values = None

    def _run(self, jobs: list[_Job]) -> list[tuple[_Job, str]]:
        """Each job that was run with its output (kept ones left out), over the processes:
        contiguous shares, one thread each (exiftool does the work; Python only waits)."""
        tools = self._exiftools()
        for tool in tools:
            tool.start()  # here, in the driving thread (see Exiftool.start)
        share = -(-len(jobs) // len(tools))
        parts = [(tool, jobs[i * share : (i + 1) * share]) for i, tool in enumerate(tools)]
        parts = [(tool, part) for tool, part in parts if part]

        def one(tool: Exiftool, part: list[_Job]) -> list[tuple[_Job, str]]:
            part = self._unclaimed(tool, part)
            return list(zip(part, tool.run([job.args for job in part]), strict=True))

        if len(parts) == 1:
            return one(*parts[0])
        with ThreadPoolExecutor(len(parts), thread_name_prefix="ck-exiftool") as pool:
            futures = [pool.submit(one, tool, part) for tool, part in parts]
            return [pair for future in futures for pair in future.result()]

    def _unclaimed(self, tool: Exiftool, jobs: list[_Job]) -> list[_Job]:
        """``jobs`` less those whose file holds a description captionkit did not write.

        One read per guarded file, all in one round trip, then the writes: exiftool's own
        ``-if`` would do the same per file but extracts every tag to evaluate it, which made
        embedding 3x slower (8.5 against 2.6 ms of exiftool CPU per Flickr JPEG)."""
        guarded = [job for job in jobs if job.guard]
        if not guarded:
            return jobs
        reads = [
            [b"-j", arg_line(f"-{TAG_DESCRIPTION}"), arg_line(f"-{TAG_WRITER}"), job.name]
            for job in guarded
        ]
        foreign = set()
        for job, output in zip(guarded, tool.run(reads), strict=True):
            tags = json_tags(output)
            description = tags.get(TAG_DESCRIPTION.split(":")[1])
            writer = str(tags.get(TAG_WRITER.split(":")[1], ""))
            if description not in (None, "") and not _ours(writer):
                foreign.add(id(job))
        with self._lock:
            self.kept += len(foreign)
        return [job for job in jobs if id(job) not in foreign]

    def _settle(self, job: _Job, output: str) -> OutputError | None:
        """Record one command's outcome; an :class:`OutputError` when the run must stop."""
        errors = [
            line[len("Error:") :].strip()
            for line in output.splitlines()
            if line.startswith("Error:")
        ]
        if not errors and _DONE.search(output):
            if job.tmp is not None:
                try:
                    os.replace(job.tmp, job.target)
                except OSError as exc:
                    return self._output_error(job, exc.strerror or str(exc))
            self.written += 1
            if job.fallback is not None:
                self.fallbacks[job.fallback] += 1
            return None
        reason = errors[0] if errors else (output.strip().splitlines() or ["no answer"])[-1]
        reason = reason.split(" - /", 1)[0].strip()  # exiftool appends " - FILE"
        reason = reason.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if any(word in reason.lower() for word in _OUTPUT_FAILURES):
            return self._output_error(job, reason)
        self.failures.append((job.source, f"metadata not written: {reason}"))
        return None

    def _output_error(self, job: _Job, why: str) -> OutputError:
        fix = (
            "make it writable, or write sidecars with --metadata xmp"
            if job.target == job.image
            else "make its folder writable, or leave --metadata off"
        )
        return OutputError(
            f"cannot write metadata to {job.target}: {why}; {fix}. "
            "Captions made so far are kept in the results store: rerun to resume"
        )

    # -- the rest of the Sink interface ------------------------------------------------------
    def check(self, inputs: Sequence[str] = ()) -> None:
        check_exiftool(self._exe)
        for folder in dict.fromkeys(input_folders(inputs)):
            try:
                probe_folder(folder)
            except OSError as exc:
                raise OutputError(
                    f"cannot write metadata in {folder}: {exc.strerror or type(exc).__name__}; "
                    "make it writable, or leave --metadata off"
                ) from None

    def close(self, *, complete: bool = True) -> None:
        try:
            self.flush()
        finally:
            tools, self._tools = self._tools, []
            for tool in tools:
                tool.close()

    def failed_writes(self) -> int:
        return len(self.failures)

    def report(self) -> list[str]:
        """Lines for the end of a run: what was written, kept, redirected or failed."""
        where = "sidecars" if self.mode == "xmp" else "images"
        lines = [f"metadata: {self.written} {where} written"]
        if self.kept:
            lines.append(
                f"metadata: {self.kept} images kept their own description "
                "(not written by captionkit; --existing overwrite replaces it)"
            )
        for kind, n in sorted(self.fallbacks.items()):
            lines.append(f"metadata: {n} {kind} images cannot hold XMP: written as .xmp sidecars")
        if self.skipped:
            lines.append(
                f"metadata: {self.skipped} results have no image file here (URLs, "
                "in-memory images, video frames, moved or deleted files): nothing written"
            )
        lines.extend(f"metadata failed: {src}: {why}" for src, why in self.failures)
        return lines


def write_sidecars(
    results: Iterable[CaptionResult],
    *,
    sidecar_name: str = "full",
    replace_foreign: bool = False,
    batch: int = 256,
) -> MetadataSink:
    """XMP sidecars for ``results`` that have a local image file (``results export --format
    xmp``); returns the closed sink (its counts). Results without a file are counted in
    ``skipped`` on the returned sink."""
    sink = MetadataSink("xmp", sidecar_name=sidecar_name, replace_foreign=replace_foreign)
    check_exiftool()
    pending = 0
    try:
        for result in results:
            path = Path(result.path) if result.path else None
            if path is None or not path.is_file():
                sink.skipped += 1
                continue
            sink.write(result, Source(key=result.source, path=path))
            pending += 1
            if pending >= batch:
                sink.flush()
                pending = 0
    finally:
        sink.close()
    return sink
