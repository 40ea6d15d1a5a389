"""``captionkit results``: read what the results store (or a cluster output folder) holds.

Both commands open the store read-only: they never create, migrate or lock it, and a
damaged, foreign or locked file is one line (``StoreError``) saying how to move it aside.
``export --from DIR`` reads a ``--ray`` run's output folder (its Parquet shards) instead.
The training-ready formats are :mod:`captionkit.engine.exports`'.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from captionkit.types import CaptionResult

app = typer.Typer(help="Inspect and export the results store.", no_args_is_help=True)


def _store_path(store: str | None) -> Path:
    from captionkit.engine.store import default_store_path

    return Path(store).expanduser() if store else default_store_path()


@app.command("export")
def export(
    fmt: str = typer.Option(
        "jsonl",
        "--format",
        "-f",
        help="jsonl, csv, a training-ready export: parquet, imagefolder, webdataset (folders), kohya, coco (JSON); or xmp: a sidecar beside every image (photo.jpg.xmp).",
    ),
    output: str = typer.Option(
        "-",
        "--output",
        "-O",
        help="File (or folder: imagefolder, webdataset) to write (default: stdout).",
    ),
    store: str = typer.Option(None, help="Store path (default: the user cache dir)."),
    source: str = typer.Option(
        None, "--from", help="A --ray run's output folder to export instead of the store."
    ),
    backend: str = typer.Option(None, help="Only this backend."),
    model: str = typer.Option(None, help="Only this model."),
    xmp_name: str = typer.Option(
        "full",
        "--xmp-name",
        help="xmp: photo.jpg.xmp (full: digiKam, darktable, Immich) or photo.xmp (stem: Capture One, Lightroom raw).",
    ),
    replace_descriptions: bool = typer.Option(
        False,
        "--replace-descriptions",
        help="xmp: also replace a description captionkit did not write (kept by default).",
    ),
) -> None:
    """Write every stored caption as JSONL or CSV, as a training-ready dataset, or as XMP sidecars."""
    from captionkit.engine.exports import EXPORT_FORMATS
    from captionkit.engine.sinks import StreamSink
    from captionkit.errors import ConfigError
    from captionkit.inputs.sources import Source

    if fmt not in ("jsonl", "csv", "xmp", *EXPORT_FORMATS):
        raise ConfigError(f"--format must be one of jsonl, csv, xmp, {', '.join(EXPORT_FORMATS)}")
    if fmt == "xmp":
        return _export_xmp(output, store, source, backend, model, xmp_name, replace_descriptions)
    if source is not None or fmt in EXPORT_FORMATS:
        return _export_rows(fmt, output, store, source, backend, model)
    sink = StreamSink(fmt, output)
    sink.check()
    n = 0
    try:
        for result in _stored_results(store, None, backend, model):
            sink.write(result, Source(key=result.source))
            n += 1
    except BaseException:
        sink.discard()  # a half export never replaces an earlier --output file
        raise
    sink.close()
    typer.echo(f"{n} results exported from {_store_path(store)}", err=True)


def _export_rows(
    fmt: str,
    output: str,
    store: str | None,
    source: str | None,
    backend: str | None,
    model: str | None,
) -> None:
    """The training-ready formats (and anything ``--from`` a cluster output folder)."""

    from captionkit.engine.exports import EXPORT_FORMATS, export_rows, result_row, row_result
    from captionkit.engine.sinks import StreamSink
    from captionkit.inputs.sources import Source

    def rows() -> Iterator[dict[str, Any]]:
        if source is not None:  # a cluster's rows as they are (their carried columns too)
            yield from _cluster_rows(source, backend, model)
        else:
            yield from map(result_row, _stored_results(store, source, backend, model))

    where = source or _store_path(store)
    if fmt in EXPORT_FORMATS:
        done = export_rows(fmt, None if output == "-" else output, rows())
        skipped = f", {done.skipped} skipped (not a local file)" if done.skipped else ""
        typer.echo(f"{done.written} results exported from {where}{skipped}", err=True)
        return
    sink = StreamSink(fmt, output)
    sink.check()
    n = 0
    try:
        for row in rows():
            sink.write(row_result(row), Source(key=str(row["id"])))
            n += 1
    except BaseException:
        sink.discard()
        raise
    sink.close()
    typer.echo(f"{n} results exported from {where}", err=True)


def _cluster_rows(
    source: str, backend: str | None, model: str | None
) -> Iterator[dict[str, Any]]:
    """The rows of a cluster output folder (``--from``), filtered by backend and model."""
    from captionkit.cluster.output import read_rows

    for row in read_rows(source):
        if (backend is None or row["backend"] == backend) and (
            model is None or row["model"] == model
        ):
            yield row


def _stored_results(
    store: str | None, source: str | None, backend: str | None, model: str | None
) -> Iterator[CaptionResult]:
    """The results to export: a cluster output folder's (``--from``), else the store's."""
    if source is not None:
        from captionkit.engine.exports import row_result

        yield from map(row_result, _cluster_rows(source, backend, model))
        return
    from captionkit.engine.store import ResultStore

    path = _store_path(store)
    if not path.exists() and not store:
        return
    db = ResultStore(path, readonly=True)
    try:
        yield from db.iter_results(backend=backend, model=model)
    finally:
        db.close()


def _export_xmp(
    output: str,
    store: str | None,
    source: str | None,
    backend: str | None,
    model: str | None,
    xmp_name: str,
    replace: bool,
) -> None:
    """``--format xmp``: a sidecar beside each stored image that is still on this machine."""

    from captionkit.engine.exports import export_xmp
    from captionkit.errors import ConfigError

    if output != "-":
        raise ConfigError(
            "--format xmp writes each sidecar beside its image (photo.jpg.xmp), where photo "
            "managers look: leave out --output"
        )

    results = _stored_results(store, source, backend, model)
    done = export_xmp(results, sidecar_name=xmp_name, replace_foreign=replace)
    where = source or _store_path(store)
    typer.echo(f"{done.written} XMP sidecars written from {where}", err=True)
    for line in done.report()[1:]:
        typer.echo(line, err=True)


@app.command("info")
def info(store: str = typer.Option(None, help="Store path (default: the user cache dir).")) -> None:
    """Where the store is and how many captions it holds."""
    from captionkit.engine.store import ResultStore

    path = _store_path(store)
    if not path.exists() and not store:
        typer.echo(f"{path}: 0 captions (no store yet)")
        return
    db = ResultStore(path, readonly=True)
    try:
        typer.echo(f"{db.path}: {db.count()} captions")
    finally:
        db.close()
