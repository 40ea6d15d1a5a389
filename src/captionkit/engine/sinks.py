"""Where finished captions go: sidecar files beside the images, or one JSONL/CSV/TXT stream.

Sidecars are written atomically (temporary file + rename), so a crash never leaves a
half-written caption that a rerun would then skip as "existing". Streams are flushed after
every batch so a killed run has written everything the store has committed.

File names need not be UTF-8 (Linux gives undecodable bytes to Python as lone surrogates,
``os.fsdecode(b"caf\\xe9.jpg") == "caf\\udce9.jpg"``). Every output keeps them losslessly:
JSONL writes such a character as a ``\\udce9`` escape (the file stays valid UTF-8, and
``os.fsencode(json.loads(line)["source"])`` gives back the exact bytes); CSV and TXT write the
name's own bytes, as ``ls`` does (read them with ``errors="surrogateescape"``).

A write that fails for want of permission or space raises :class:`OutputError`, one line
naming the file and the fix; :func:`check_writable` runs the same checks before a model loads.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import sys
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from captionkit.errors import ConfigError, OutputError
from captionkit.inputs.sources import IMAGE_SUFFIXES, NEVER_IMAGES, Source, is_url, sniff_image
from captionkit.types import CaptionResult

EXISTING_POLICIES = ("skip", "overwrite", "append", "prepend")
FORMATS = ("txt", "jsonl", "csv")
#: How several captions per image (``--num-captions N``) reach sidecars: ``first`` writes the
#: best one; ``lines`` writes all N as lines of IMAGE.txt (kohya-ss sd-scripts with
#: ``enable_wildcard`` and OneTrainer both train on one random line of a multi-line caption
#: file); ``numbered`` writes IMAGE.txt, IMAGE.1.txt, ... IMAGE.{N-1}.txt (one per file).
CAPTION_LAYOUTS = ("first", "lines", "numbered")

_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(obj: Any) -> str:
    """One line of JSON, readable (``café`` stays ``café``) and always valid UTF-8.

    ``ensure_ascii=False`` would let a lone surrogate (an undecodable file-name byte) through,
    which no UTF-8 file can hold; it becomes a ``\\udcXX`` escape that ``json.loads`` reverses.
    """
    text = json.dumps(obj, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _file_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _create(path: Path, mode: int | None) -> int:
    """Create ``path`` exclusively; new files get 0o666 minus the umask (not mkstemp's 0o600),
    and ``mode`` (an existing file's mode, kept across a rewrite) wins when given."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    if mode is not None:
        with contextlib.suppress(OSError):  # not ours to chmod (another owner): umask's mode
            os.fchmod(fd, mode)
    return fd


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file beside it and a rename.

    The temporary name is fixed per target (``.photo.txt.tmp``), so a leftover of a killed
    run is reused and removed by the rerun's write instead of piling up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = _create(tmp, _file_mode(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def probe_folder(folder: Path) -> None:
    """Raise OSError unless a file can be created in ``folder`` (or the nearest existing
    folder above it, where ``folder`` would be made). A real create, not ``os.access``:
    it sees read-only mounts, ACLs and full disks alike; nothing is left behind."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
    probe = folder / f".captionkit-probe-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    os.close(_create(probe, None))
    probe.unlink()


def input_folders(inputs: Sequence[str]) -> list[Path]:
    """The folders that files written beside the inputs land in (URLs and stdin have none)."""
    folders: list[Path] = []
    for item in inputs:
        if item == "-" or is_url(item):
            continue
        path = Path(item).expanduser()
        folders.append(path if path.is_dir() else path.parent)
    return folders


class Sink(ABC):
    def already_done(self, source: Source) -> bool:
        """True when this sink needs nothing for ``source`` (lets the engine skip reading it)."""
        return False

    @abstractmethod
    def write(self, result: CaptionResult, source: Source) -> None: ...

    def flush(self) -> None:
        """Make everything written so far durable (called after each batch)."""

    def check(self, inputs: Sequence[str] = ()) -> None:
        """Raise :class:`OutputError` if this sink's targets cannot be written (before a run)."""

    def close(self, *, complete: bool = True) -> None:
        """``complete=False``: the run stopped early (an error, Ctrl-C)."""
        self.flush()

    def report(self) -> list[str]:
        """Lines for the end of the run (a sink that keeps per-image failures of its own,
        such as the metadata writer, says what it did); none by default."""
        return []

    def failed_writes(self) -> int:
        """Images this sink could not write although their caption was made (exit code 1)."""
        return 0


def check_writable(sinks: Iterable[Sink], inputs: Sequence[str] = ()) -> None:
    """Check every sink's targets before the model loads: one :class:`OutputError` line.

    ``inputs`` are the user's inputs (files, folders, URLs, ``-``); sidecars written beside
    the images need their folders writable. Folders found deeper in the tree, and a disk that
    fills up, are caught when written: the run then stops with the same one line.
    """
    for sink in sinks:
        sink.check(inputs)


class SidecarSink(Sink):
    """``photo.jpg`` -> ``photo.txt`` beside it, or mirrored under ``output_dir``.

    Names never collide (each image gets its own file, the same one on every run):

    * images in one folder that differ only in their last suffix (``photo.jpg``,
      ``photo.png``) each write their full name plus the extension (``photo.jpg.txt``,
      ``photo.png.txt``), and so does an image whose stem is such a name (``photo.jpg.png``);
      an image alone with its stem writes ``photo.txt``. The rule reads the folder, not the
      run, so it holds however the images are named on the command line;
    * with ``output_dir`` and several ``roots`` (the user's inputs), the tree is mirrored
      relative to the inputs' common folder (``d1/img.jpg d2/img.jpg`` -> ``OUT/d1/img.txt``,
      ``OUT/d2/img.txt``); one input mirrors relative to itself, as before;
    * a name still claimed in this run by another image (sources from a stdin list) gets
      ``img.jpg.<8 hex of its path>.txt``.
    """

    _FOLDER_CACHE = 64

    def __init__(
        self,
        *,
        extension: str = ".txt",
        output_dir: str | Path | None = None,
        existing: str = "skip",
        separator: str = " ",
        roots: Sequence[str | Path] | None = None,
        layout: str = "first",
        count: int = 1,
    ) -> None:
        if existing not in EXISTING_POLICIES:
            raise ConfigError(f"--existing must be one of {', '.join(EXISTING_POLICIES)}")
        if layout not in CAPTION_LAYOUTS:
            raise ConfigError(f"--captions-layout must be one of {', '.join(CAPTION_LAYOUTS)}")
        self.layout = layout
        #: Captions per image the run asks for (``--num-captions``): the files ``numbered``
        #: writes, and the lines ``lines`` writes at most.
        self.count = max(1, count) if layout != "first" else 1
        if layout == "lines":
            separator = "\n"  # appending keeps one caption per line
        self.extension = extension if extension.startswith(".") else f".{extension}"
        self.output_dir = Path(output_dir).expanduser() if output_dir else None
        self.existing = existing
        self.separator = separator
        self._base = self._common_base(roots) if output_dir and roots else None
        self._folders: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._claims: dict[str, str] = {}

    @staticmethod
    def _common_base(roots: Sequence[str | Path]) -> str | None:
        folders = []
        for item in roots:
            item = str(item)
            if item == "-" or is_url(item):
                continue
            path = Path(item).expanduser()
            folders.append(os.path.abspath(path if path.is_dir() else path.parent))
        if len(set(folders)) < 2:
            return None  # one input: mirror relative to it (source.rel), as always
        return os.path.commonpath(folders)

    # -- names -------------------------------------------------------------------------------
    def _fallbacks(self, folder: Path) -> frozenset[str]:
        """Names in ``folder`` whose sidecar is ``name + extension`` (see the class doc)."""
        key = str(folder)
        if key in self._folders:
            self._folders.move_to_end(key)
            return self._folders[key]
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it if not e.name.startswith(".")]
        except OSError:
            names = []
        candidates = [n for n in names if Path(n).suffix.lower() not in NEVER_IMAGES]
        stems = Counter(Path(n).stem for n in candidates)
        by_name = set(candidates)
        is_image: dict[str, bool] = {}

        def image(name: str) -> bool:
            if name not in is_image:
                suffix = Path(name).suffix.lower()
                path = folder / name
                is_image[name] = path.is_file() and (suffix in IMAGE_SUFFIXES or sniff_image(path))
            return is_image[name]

        # Only names that could clash are looked at closely (a sniff reads 16 bytes).
        involved = [n for n in candidates if stems[Path(n).stem] > 1 or Path(n).stem in by_name]
        images = [n for n in involved if image(n)]
        counts = Counter(Path(n).stem for n in images)
        fallback = {n for n in images if counts[Path(n).stem] > 1}
        changed = True
        while changed:  # a full name now used as a sidecar stem evicts that stem's owner
            changed = False
            for n in images:
                if n not in fallback and Path(n).stem in fallback:
                    fallback.add(n)
                    changed = True
        result = frozenset(fallback)
        self._folders[key] = result
        if len(self._folders) > self._FOLDER_CACHE:
            self._folders.popitem(last=False)
        return result

    def _name(self, path: Path) -> str:
        if path.name in self._fallbacks(path.parent):
            return path.name + self.extension
        return path.stem + self.extension

    def path_for(self, source: Source) -> Path | None:
        if source.path is None:
            return None  # URLs have no folder; their captions go to the stream sink
        name = self._name(source.path)
        if self.output_dir is None:
            return source.path.with_name(name)
        rel = source.rel or Path(source.path.name)
        if self._base is not None:
            absolute = os.path.abspath(source.path)
            if os.path.commonpath([absolute, self._base]) == self._base:
                rel = Path(os.path.relpath(absolute, self._base))
        target = self.output_dir / rel.parent / name
        owner = os.path.abspath(source.path)
        claimed = self._claims.setdefault(str(target), owner)
        if claimed != owner:
            digest = hashlib.sha256(os.fsencode(owner)).hexdigest()[:8]
            target = target.with_name(f"{source.path.name}.{digest}{self.extension}")
            self._claims.setdefault(str(target), owner)
        return target

    # -- writing -----------------------------------------------------------------------------
    def targets(self, source: Source) -> list[Path]:
        """Every file this sink writes for ``source`` (``numbered``: IMAGE.txt, IMAGE.1.txt...)."""
        target = self.path_for(source)
        if target is None:
            return []
        if self.layout != "numbered":
            return [target]
        stem = target.name[: len(target.name) - len(self.extension)]
        return [target] + [
            target.with_name(f"{stem}.{i}{self.extension}") for i in range(1, self.count)
        ]

    def already_done(self, source: Source) -> bool:
        if self.existing != "skip":
            return False
        targets = self.targets(source)
        return bool(targets) and all(t.exists() for t in targets)

    def _merge(self, old: str, text: str) -> str | None:
        """The new sidecar text, or None when it already holds this caption (a rerun)."""
        sep = self.separator
        if old == text:
            return None
        if self.existing == "append":
            return None if old.endswith(sep + text) else f"{old}{sep}{text}"
        if self.existing == "prepend":
            return None if old.startswith(text + sep) else f"{text}{sep}{old}"
        return text

    def texts(self, result: CaptionResult) -> list[str]:
        """The captions to write: the best one, then (layouts) the other candidates."""
        first = result.text or ""
        if self.layout == "first":
            return [first]
        rest = [c.text for c in result.candidates[1 : self.count]]
        return [first, *rest]

    def write(self, result: CaptionResult, source: Source) -> None:
        targets = self.targets(source)
        if not targets or not result.ok:
            return
        texts = self.texts(result)
        if self.layout == "lines":
            texts = ["\n".join(" ".join(t.split()) for t in texts)]
        for target, text in zip(targets, texts, strict=False):
            self._write_one(target, text)

    def _write_one(
        self,
        target: Path,
        text: str,
        merge: Callable[[str, str], str | None] | None = None,
    ) -> None:
        """Write ``text`` to ``target`` under the ``--existing`` rule; ``merge`` combines it
        with what the file holds (default: the image sidecar's append/prepend)."""
        try:
            if target.exists():
                if self.existing == "skip":
                    return
                old = target.read_text(encoding="utf-8", errors="surrogateescape").strip()
                if old:
                    merged = (merge or self._merge)(old, text)
                    if merged is None:
                        return
                    text = merged
            atomic_write_text(target, text + "\n")
        except OSError as exc:
            raise self._error(target, exc) from None

    def _error(self, target: Path, exc: OSError) -> OutputError:
        if self.output_dir is not None:
            fix = "choose a writable --output-dir, or --no-sidecar"
        else:
            fix = (
                f"make {target.parent} writable, or write sidecars elsewhere with "
                "--output-dir DIR (or --no-sidecar)"
            )
        return OutputError(
            f"cannot write the sidecar {target}: {_why(exc)}; {fix}. "
            "Captions made so far are kept in the results store: rerun to resume"
        )

    def check(self, inputs: Sequence[str] = ()) -> None:
        folders = [self.output_dir] if self.output_dir is not None else input_folders(inputs)
        for folder in dict.fromkeys(folders):
            try:
                probe_folder(folder)
            except OSError as exc:
                where = "--output-dir" if self.output_dir is not None else "sidecars"
                fix = (
                    "choose a writable --output-dir, or --no-sidecar"
                    if self.output_dir is not None
                    else "make it writable, or write sidecars elsewhere with --output-dir DIR "
                    "(or --no-sidecar)"
                )
                raise OutputError(f"cannot write {where} in {folder}: {_why(exc)}; {fix}") from None


class StreamSink(Sink):
    """All results as one JSONL, CSV or TXT stream, to a file or standard output.

    A file is written beside its target under a temporary name and renamed over the target
    at the first flush, that is once the first batch is done: a run that fails before any
    result (a typo in ``--model``) leaves the previous file untouched, and from then on the
    file holds every finished batch, so a killed run keeps what it made. It is rewritten in
    full each run (results from the store are re-emitted), so a resumed run still ends with
    one complete file without duplicates.
    """

    CSV_FIELDS = (
        "source",
        "caption",
        "candidates",
        "backend",
        "model",
        "style",
        "error",
        "seconds",
    )

    def __init__(self, fmt: str, output: str | Path | None = None) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.path: Path | None = None if output in (None, "-") else Path(str(output)).expanduser()
        self._own = self.path is not None
        self._tmp: Path | None = None
        self._fh: TextIO | None = None if self._own else sys.stdout
        self._published = False
        self._closed = False
        self._csv: Any = None
        if not self._own:
            self._start()

    # -- the file's life ---------------------------------------------------------------------
    def _start(self) -> None:
        """Open the output (for a file: its temporary twin) and write the CSV header."""
        if self._own and self._fh is None:
            assert self.path is not None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = self.path.with_name(
                    f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                )
                fd = _create(self._tmp, _file_mode(self.path))
            except OSError as exc:
                self._tmp = None
                raise self._error(exc) from None
            self._fh = os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="")
        if self.fmt == "csv" and self._csv is None:
            self._csv = csv.writer(SimpleNamespace(write=self._emit))
            self._csv.writerow(self.CSV_FIELDS)

    def _emit(self, text: str) -> None:
        assert self._fh is not None
        try:
            buffer = None if self._own else getattr(self._fh, "buffer", None)
            if buffer is not None and _SURROGATE.search(text):
                # Standard output and a file name that is not UTF-8: write the name's own
                # bytes, as `ls` would (the text layer would fail or print '?').
                self._fh.flush()
                buffer.write(text.encode(self._fh.encoding or "utf-8", "surrogateescape"))
                buffer.flush()
            else:
                self._fh.write(text)
        except OSError as exc:
            if not self._own:
                raise
            raise self._error(exc) from None

    def _publish(self) -> None:
        """Rename the temporary file over the target; later writes go to the same file."""
        assert self.path is not None and self._tmp is not None
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise self._error(exc) from None
        self._published = True
        self._sweep()

    def _sweep(self) -> None:
        """Remove temporary twins left by killed runs (their process is gone)."""
        assert self.path is not None
        prefix = f".{self.path.name}."
        try:
            with os.scandir(self.path.parent) as it:
                stale = [e.name for e in it if e.name.startswith(prefix)]
        except OSError:
            return
        for name in stale:
            parts = name[len(prefix) :].split(".")
            if len(parts) != 3 or parts[2] != "tmp" or not parts[0].isdigit():
                continue
            pid = int(parts[0])
            if pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                (self.path.parent / name).unlink()

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(
            f"cannot write {self.path}: {_why(exc)}; choose a writable place with --output. "
            "Captions made so far are kept in the results store: rerun to resume"
        )

    # -- the Sink interface ------------------------------------------------------------------
    def write(self, result: CaptionResult, source: Source) -> None:
        if self._fh is None:
            self._start()
        if self.fmt == "jsonl":
            self._emit(to_json(result.to_dict()) + "\n")
        elif self._csv is not None:
            self._csv.writerow(
                [
                    result.source,
                    result.text or "",
                    to_json([c.text for c in result.candidates]),
                    result.backend,
                    result.model,
                    result.style,
                    result.error or "",
                    f"{result.seconds:.3f}",
                ]
            )
        elif result.ok:
            self._emit(f"{result.source}\t{result.text}\n")

    def flush(self) -> None:
        if self._fh is None:
            return
        if not self._own:
            self._fh.flush()
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise self._error(exc) from None
        if not self._published:
            self._publish()

    def discard(self) -> None:
        """Drop what this sink wrote if it was never published (the old file stays)."""
        if self._own and self._fh is not None and not self._published:
            self._fh.close()
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            self._fh = None
        self._closed = True

    def check(self, inputs: Sequence[str] = ()) -> None:
        if not self._own:
            return
        assert self.path is not None
        try:
            if self.path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(self.path))
            probe_folder(self.path.parent)
        except OSError as exc:
            raise self._error(exc) from None

    def close(self, *, complete: bool = True) -> None:
        if self._closed:
            return
        if self._own and self._fh is None:
            if not complete:  # nothing made and the run failed: keep the previous file
                self._closed = True
                return
            self._start()  # a finished run with no result: an empty file (CSV: the header)
        self.flush()
        self._closed = True
        if self._own and self._fh is not None:
            self._fh.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
