"""Training-ready exports: Parquet, HF ``imagefolder``, WebDataset shards, kohya JSON, COCO JSON.

Every export reads the same thing, a *result row* (:func:`result_row`: one dict per image with
``id``, ``path``, ``sha256``, ``caption``, ``candidates``, ``backend``, ``model``, ``style``,
``settings``, ``error``), so the single-machine engine (as a sink, ``--format``), the
cluster driver (its Parquet output shards hold these rows) and ``captionkit results export``
(from the store or from a cluster output) write byte-for-byte the same files.

Formats and who reads them:

* ``parquet``: one file, the rows as they are (``pyarrow.parquet.read_table``, pandas, Ray).
* ``imagefolder``: ``DIR/train/metadata.jsonl`` (``file_name`` + ``text``) beside copies (hard
  links where the filesystem allows) of the images, so ``datasets.load_dataset("imagefolder",
  data_dir=DIR)`` (or ``load_dataset(DIR)``) yields a ``train`` split of ``image`` + ``text``.
  The ``train/`` folder is what makes the split certain: ``datasets`` otherwise guesses splits
  from file names, and ``COCO_val2014_*.jpg`` would become a ``validation`` split.
* ``webdataset``: ``DIR/shard-000000.tar``...: per sample ``KEY.<ext>`` (the image's own
  bytes), ``KEY.txt`` (the caption) and ``KEY.json`` (the row), 1000 samples per shard.
* ``kohya``: ``{"/abs/path.jpg": {"caption": "..."}}`` (sd-scripts' ``--in_json`` with full
  paths).
* ``coco``: ``[{"image_id": 123, "caption": "..."}]`` (the COCO caption results format; the
  id is the number in a COCO file name when there is one, else the row's id).

Only successful rows are exported to the training formats (a failed image has no caption to
train on); ``parquet`` keeps failures with their error. Images that are not local files (URLs,
bytes in a table) have nothing to copy, so ``imagefolder``/``webdataset`` skip them and count
them in :attr:`Exporter.skipped`. Files appear whole: each is written under a temporary name
and renamed when the export closes, so a failed export never leaves half a dataset behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from captionkit.engine.sinks import Sink, atomic_write_text, probe_folder, to_json
from captionkit.errors import ConfigError, OutputError
from captionkit.inputs.sources import Source
from captionkit.types import Candidate, CaptionResult

EXPORT_FORMATS = ("parquet", "imagefolder", "webdataset", "kohya", "coco")
#: Formats whose ``--output`` is a folder (the others write one file).
FOLDER_FORMATS = ("imagefolder", "webdataset")
#: The columns every result row has, in order (cluster output shards use the same).
RESULT_COLUMNS = (
    "id",
    "path",
    "sha256",
    "caption",
    "candidates",
    "backend",
    "model",
    "style",
    "settings",
    "error",
)
SHARD_SIZE = 1000


def result_row(
    result: CaptionResult, *, id: str | None = None, settings: str = ""
) -> dict[str, Any]:
    """One image's result as a flat row (candidates as ``[{"text", "score"}]``)."""
    return {
        "id": id if id is not None else result.source,
        "path": result.path,
        "sha256": result.sha256 or None,
        "caption": result.text if result.ok else None,
        "candidates": [{"text": c.text, "score": c.score} for c in result.candidates],
        "backend": result.backend,
        "model": result.model,
        "style": result.style,
        "settings": settings,
        "error": None if result.ok else (result.error or "failed"),
    }


def row_result(row: dict[str, Any]) -> CaptionResult:
    """A result row back as a :class:`CaptionResult` (for the JSONL/CSV/sidecar sinks)."""
    return CaptionResult(
        source=str(row["id"]),
        text=row.get("caption"),
        candidates=[Candidate(c["text"], c.get("score")) for c in row.get("candidates") or []],
        backend=row.get("backend") or "",
        model=row.get("model") or "",
        style=row.get("style") or "",
        sha256=row.get("sha256") or "",
        error=row.get("error"),
        path=row.get("path"),
    )


def arrow_schema(extra: Sequence[tuple[str, Any]] = ()) -> Any:
    """The Parquet schema of result rows (plus carried-through input columns, if any)."""
    import pyarrow as pa

    candidate = pa.struct([("text", pa.string()), ("score", pa.float64())])
    fields = [
        ("id", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("caption", pa.string()),
        ("candidates", pa.list_(candidate)),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("style", pa.string()),
        ("settings", pa.string()),
        ("error", pa.string()),
    ]
    return pa.schema([*fields, *extra])


_COCO_ID = re.compile(r"(\d+)(?=\.[A-Za-z0-9]+$)")


def coco_image_id(row: dict[str, Any]) -> int | str:
    """``COCO_val2014_000000391895.jpg`` -> 391895; anything else keeps its id."""
    name = os.path.basename(str(row.get("path") or row.get("id") or ""))
    match = _COCO_ID.search(name)
    return int(match.group(1)) if match else str(row.get("id"))


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class Exporter:
    """Writes result rows in one format; ``close(complete=True)`` publishes the files."""

    def __init__(self, fmt: str, output: str | Path | None) -> None:
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}")
        if output in (None, "-") and fmt not in ("kohya", "coco"):
            raise ConfigError(f"--format {fmt} needs --output (a {_kind(fmt)})")
        self.fmt = fmt
        self.path = None if output in (None, "-") else Path(str(output)).expanduser()
        self.written = 0
        self.skipped = 0
        self._rows: list[dict[str, Any]] = []  # parquet: one row group's worth; json: all
        self._parquet: Any = None
        self._tar: tarfile.TarFile | None = None
        self._shard = 0
        self._in_shard = 0
        self._names: set[str] = set()
        self._metadata: Any = None
        self._published: list[tuple[Path, Path]] = []

    # -- checks ----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`OutputError` unless the target can be written (before a run)."""
        if self.path is None:
            return
        try:
            if self.fmt in FOLDER_FORMATS:
                if self.path.exists() and not self.path.is_dir():
                    raise NotADirectoryError(20, "Not a directory", str(self.path))
                probe_folder(self.path)
            else:
                if self.path.is_dir():
                    raise IsADirectoryError(21, "Is a directory", str(self.path))
                probe_folder(self.path.parent)
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> OutputError:
        why = exc.strerror or type(exc).__name__
        return OutputError(
            f"cannot write the {self.fmt} export {self.path}: {why}; choose another --output"
        )

    # -- writing ---------------------------------------------------------------------------
    def write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        try:
            for row in rows:
                self._write(row)
        except OSError as exc:
            raise self._error(exc) from None

    def _write(self, row: dict[str, Any]) -> None:
        if self.fmt == "parquet":
            self._rows.append(row)
            if len(self._rows) >= SHARD_SIZE:
                self._flush_parquet()
            self.written += 1
            return
        if row.get("caption") is None or row.get("error"):
            return  # nothing to train or evaluate on
        if self.fmt in ("kohya", "coco"):
            self._rows.append(row)
            self.written += 1
            return
        image = _local_image(row)
        if image is None:
            self.skipped += 1
            return
        if self.fmt == "imagefolder":
            self._write_imagefolder(row, image)
        else:
            self._write_webdataset(row, image)
        self.written += 1

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert self.path is not None
        extra = [k for k in (self._rows[0] if self._rows else {}) if k not in RESULT_COLUMNS]
        table = pa.Table.from_pylist(
            self._rows, schema=arrow_schema([(k, _arrow_type(self._rows, k)) for k in extra])
        )
        if self._parquet is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._parquet = pq.ParquetWriter(_tmp(self.path), table.schema)
            self._published.append((_tmp(self.path), self.path))
        self._parquet.write_table(table.cast(self._parquet.schema))
        self._rows = []

    def _unique(self, name: str) -> str:
        stem, ext = os.path.splitext(name)
        candidate, n = name, 1
        while candidate in self._names:
            candidate, n = f"{stem}-{n}{ext}", n + 1
        self._names.add(candidate)
        return candidate

    def _open_metadata(self) -> None:
        assert self.path is not None
        folder = self.path / "train"
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "metadata.jsonl"
        self._metadata = open(_tmp(meta), "w", encoding="utf-8")  # noqa: SIM115
        self._published.append((_tmp(meta), meta))

    def _write_imagefolder(self, row: dict[str, Any], image: Path) -> None:
        assert self.path is not None
        if self._metadata is None:
            self._open_metadata()
        name = self._unique(image.name)
        target = self.path / "train" / name
        target.unlink(missing_ok=True)
        try:
            os.link(image, target)  # free on the same filesystem
        except OSError:
            shutil.copyfile(image, target)
        self._metadata.write(to_json({"file_name": name, "text": row["caption"]}) + "\n")

    def _write_webdataset(self, row: dict[str, Any], image: Path) -> None:
        assert self.path is not None
        if self._tar is None or self._in_shard >= SHARD_SIZE:
            self._close_tar()
            self.path.mkdir(parents=True, exist_ok=True)
            shard = self.path / f"shard-{self._shard:06d}.tar"
            self._tar = tarfile.open(_tmp(shard), "w")  # noqa: SIM115
            self._published.append((_tmp(shard), shard))
            self._shard += 1
            self._in_shard = 0
        key = f"{self.written:09d}"  # no dots: WebDataset splits the key at the first one
        ext = image.suffix.lower().lstrip(".") or "jpg"
        record = {k: v for k, v in row.items() if _jsonable(v)}
        self._tar.add(str(image), arcname=f"{key}.{ext}")
        _add_bytes(self._tar, f"{key}.txt", str(row["caption"]).encode("utf-8", "surrogateescape"))
        _add_bytes(self._tar, f"{key}.json", to_json(record).encode("utf-8"))
        self._in_shard += 1

    def _close_tar(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    # -- publishing ------------------------------------------------------------------------
    def close(self, *, complete: bool = True) -> None:
        """Finish the files and rename them into place (``complete=False``: drop them)."""
        try:
            if complete:
                self._finish()
            else:
                self._discard()
        except OSError as exc:
            raise self._error(exc) from None

    def _finish(self) -> None:
        if self.fmt == "parquet":
            if self._rows or self._parquet is None:
                self._flush_parquet()  # the last row group (or an empty file's schema)
            self._parquet.close()
        elif self.fmt in ("kohya", "coco"):
            data: Any
            if self.fmt == "kohya":
                data = {_kohya_key(r): {"caption": r["caption"]} for r in self._rows}
            else:
                data = [{"image_id": coco_image_id(r), "caption": r["caption"]} for r in self._rows]
            text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
            if self.path is None:
                import sys

                sys.stdout.write(text)
            else:
                atomic_write_text(self.path, text)
        elif self.fmt == "imagefolder":
            if self._metadata is None:  # nothing exported: still a valid (empty) folder
                self._open_metadata()
            assert self._metadata is not None
            self._metadata.close()
        else:
            self._close_tar()
        for tmp, final in self._published:
            os.replace(tmp, final)
        self._published = []

    def _discard(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._metadata is not None:
            self._metadata.close()
        self._close_tar()
        for tmp, _ in self._published:
            tmp.unlink(missing_ok=True)
        self._published = []


def _kind(fmt: str) -> str:
    return "folder" if fmt in FOLDER_FORMATS else "file"


def _kohya_key(row: dict[str, Any]) -> str:
    path = row.get("path")
    return os.path.abspath(path) if path else str(row.get("id"))


def _local_image(row: dict[str, Any]) -> Path | None:
    path = row.get("path")
    if not path:
        return None
    p = Path(str(path))
    return p if p.is_file() else None


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None))


def _arrow_type(rows: list[dict[str, Any]], key: str) -> Any:
    import pyarrow as pa

    values = [r.get(key) for r in rows]
    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def export_xmp(
    results: Iterable[CaptionResult], *, sidecar_name: str = "full", replace_foreign: bool = False
) -> Any:
    """``results export --format xmp``: an XMP sidecar beside every stored image still on disk.

    Not an :class:`Exporter` format: it writes no file of its own but one ``photo.jpg.xmp`` per
    image (:mod:`captionkit.engine.metadata`), so it takes no ``--output``. Results are taken in
    the store's order, so for an image captioned by several models the latest caption wins.
    Returns the closed :class:`~captionkit.engine.metadata.MetadataSink` (its counts).
    """
    from captionkit.engine.metadata import write_sidecars

    return write_sidecars(
        (r for r in results if r.ok), sidecar_name=sidecar_name, replace_foreign=replace_foreign
    )


def export_rows(fmt: str, output: str | Path | None, rows: Iterable[dict[str, Any]]) -> Exporter:
    """Write ``rows`` in ``fmt`` to ``output`` in one go; the finished exporter (its counts)."""
    exporter = Exporter(fmt, output)
    exporter.check()
    try:
        exporter.write_rows(rows)
    except BaseException:
        exporter.close(complete=False)
        raise
    exporter.close()
    return exporter


class ExportSink(Sink):
    """An :class:`Exporter` as an engine sink (``captionkit caption --format parquet``).

    Rows are written as batches finish; the files appear when the run closes the sink. A run
    that stops early publishes what it made (``complete=False`` keeps every finished batch:
    the results store has them too, so a rerun rewrites the export whole).
    """

    def __init__(self, fmt: str, output: str | Path | None, settings: str = "") -> None:
        self.exporter = Exporter(fmt, output)
        self.settings = settings

    def check(self, inputs: Sequence[str] = ()) -> None:
        self.exporter.check()

    def write(self, result: CaptionResult, source: Source) -> None:
        self.exporter.write_rows([result_row(result, id=source.key, settings=self.settings)])

    def close(self, *, complete: bool = True) -> None:
        self.exporter.close(complete=True)
