"""Where finished captions go: sidecar files beside the images, or one JSONL/CSV/TXT stream.

Sidecars are written atomically (temporary file + rename), so a crash never leaves a
half-written caption that a rerun would then skip as "existing". Streams are flushed after
every batch so a killed run has written everything the store has committed.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TextIO

from captionkit.errors import ConfigError
from captionkit.inputs.sources import Source
from captionkit.types import CaptionResult

EXISTING_POLICIES = ("skip", "overwrite", "append", "prepend")
FORMATS = ("txt", "jsonl", "csv")


class Sink(ABC):
    def already_done(self, source: Source) -> bool:
        """True when this sink needs nothing for ``source`` (lets the engine skip reading it)."""
        return False

    @abstractmethod
    def write(self, result: CaptionResult, source: Source) -> None: ...

    def flush(self) -> None:
        """Make everything written so far durable (called after each batch)."""

    def close(self) -> None:
        self.flush()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SidecarSink(Sink):
    """``photo.jpg`` -> ``photo.txt`` beside it, or mirrored under ``output_dir``."""

    def __init__(
        self,
        *,
        extension: str = ".txt",
        output_dir: str | Path | None = None,
        existing: str = "skip",
        separator: str = " ",
    ) -> None:
        if existing not in EXISTING_POLICIES:
            raise ConfigError(f"--existing must be one of {', '.join(EXISTING_POLICIES)}")
        self.extension = extension if extension.startswith(".") else f".{extension}"
        self.output_dir = Path(output_dir).expanduser() if output_dir else None
        self.existing = existing
        self.separator = separator

    def path_for(self, source: Source) -> Path | None:
        if source.path is None:
            return None  # URLs have no folder; their captions go to the stream sink
        if self.output_dir is not None:
            rel = source.rel or Path(source.path.name)
            return (self.output_dir / rel).with_suffix(self.extension)
        return source.path.with_suffix(self.extension)

    def already_done(self, source: Source) -> bool:
        target = self.path_for(source)
        return self.existing == "skip" and target is not None and target.exists()

    def write(self, result: CaptionResult, source: Source) -> None:
        target = self.path_for(source)
        if target is None or not result.ok:
            return
        text = result.text or ""
        if target.exists():
            if self.existing == "skip":
                return
            old = target.read_text(encoding="utf-8").strip()
            if old and self.existing == "append":
                text = f"{old}{self.separator}{text}"
            elif old and self.existing == "prepend":
                text = f"{text}{self.separator}{old}"
        atomic_write_text(target, text + "\n")


class StreamSink(Sink):
    """All results as one JSONL, CSV or TXT stream, to a file or standard output."""

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
        self._own = output not in (None, "-")
        if self._own:
            path = Path(output).expanduser()  # type: ignore[arg-type]
            path.parent.mkdir(parents=True, exist_ok=True)
            # Rewritten in full each run: results already in the store are re-emitted, so a
            # resumed run still produces one complete file without duplicates.
            self._fh: TextIO = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())
        else:
            self._fh = sys.stdout
        self._csv = csv.writer(self._fh) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.CSV_FIELDS)

    def write(self, result: CaptionResult, source: Source) -> None:
        if self.fmt == "jsonl":
            record = result.to_dict()
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self._csv is not None:
            self._csv.writerow(
                [
                    result.source,
                    result.text or "",
                    json.dumps([c.text for c in result.candidates], ensure_ascii=False),
                    result.backend,
                    result.model,
                    result.style,
                    result.error or "",
                    f"{result.seconds:.3f}",
                ]
            )
        elif result.ok:
            self._fh.write(f"{result.source}\t{result.text}\n")

    def flush(self) -> None:
        self._fh.flush()
        if self._own:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()
