"""Inputs that are tables rather than image files: Parquet/CSV/JSONL, HF datasets, WebDataset.

Nothing here imports Ray or pyarrow at import time: this module says *what kind* of input a
string names, expands WebDataset brace patterns, finds the image column of a table, and reads
a table's rows lazily for a single machine. The cluster driver turns the same descriptions
into Ray Datasets (``captionkit.cluster.inputs``), so both paths agree on what a row is:

* ``id``: the row's identity in outputs and for resume: a path or URL image cell is its own
  id; an image held as bytes has ``sha256:<content hash>`` (so resume works by content);
* the image cell: a path/URL string, bytes, or an ``{"bytes", "path"}`` struct (HF images);
* every other column, carried through to the output (renamed ``input_<name>`` when it
  clashes with a result column such as ``caption``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from captionkit.errors import InputError

TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json"}
#: Column names tried, in order, when ``--image-column`` is not given.
IMAGE_COLUMNS = ("image", "img", "url", "image_url", "path", "file_name", "filepath")
#: Image extensions a WebDataset sample may hold its image under.
WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")

Kind = Literal["files", "table", "hf", "webdataset"]

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


@dataclass(frozen=True)
class TableInput:
    """One table-like input: its kind, where it is, and the format it is read with."""

    kind: Kind
    location: str
    fmt: str = ""  # parquet, csv, json (tables)
    paths: tuple[str, ...] = ()  # webdataset shards after brace expansion


def expand_braces(pattern: str) -> list[str]:
    """``shards/{00000..00002}.tar`` -> three names (zero padding kept); ``{a,b}`` lists too.

    The WebDataset convention; several groups multiply (``{0..1}-{a,b}`` -> four names).
    """
    found = [m for m in (_RANGE.search(pattern), _LIST.search(pattern)) if m is not None]
    if not found:
        return [pattern]
    match = min(found, key=lambda m: m.start())  # the leftmost group varies slowest
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.re is _RANGE:
        lo, hi = match.group(1), match.group(2)
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        values = [str(n).zfill(width) for n in range(int(lo), int(hi) + step, step)]
    else:
        values = match.group(1).split(",")
    return list(itertools.chain.from_iterable(expand_braces(head + v + tail) for v in values))


def classify(item: str) -> TableInput:
    """What ``item`` names: a table, an HF dataset (``hf:org/name``), shards, or files."""
    if item.startswith("hf:"):
        name = item[3:]
        if not name:
            raise InputError("hf: needs a dataset name, e.g. hf:org/dataset or hf:/local/dir")
        return TableInput("hf", name)
    base = item.split("?", 1)[0]
    if base.endswith(".tar") or (".tar" in base and "{" in base):
        paths = tuple(expand_braces(item))
        return TableInput("webdataset", item, paths=paths)
    suffix = Path(base).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return TableInput("table", item, fmt=TABLE_SUFFIXES[suffix])
    return TableInput("files", item)


def is_table_like(items: Sequence[str]) -> bool:
    """True when any input is a table, an HF dataset or WebDataset shards."""
    return any(classify(i).kind != "files" for i in items if i != "-")


def pick_image_column(columns: Sequence[str], given: str | None, where: str) -> str:
    """``--image-column`` when given (it must exist), else the first usual name present."""
    if given:
        if given not in columns:
            raise InputError(
                f"{where} has no column '{given}' (columns: {', '.join(columns)}); "
                "check --image-column"
            )
        return given
    for name in (*IMAGE_COLUMNS, *WDS_IMAGE_KEYS):
        if name in columns:
            return name
    raise InputError(
        f"{where}: no image column found (columns: {', '.join(columns)}); "
        "name it with --image-column"
    )


def row_id(cell: Any) -> str | None:
    """A path/URL cell is the row's id; bytes and structs with bytes get one from content."""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return None
        return str(cell["path"]) if cell.get("path") else None
    return None


def carried_name(name: str, reserved: Sequence[str]) -> str:
    """An input column's name in the output (``caption`` -> ``input_caption``)."""
    return f"input_{name}" if name in reserved else name


def read_table(path: str, fmt: str, batch_rows: int = 4096) -> Iterator[dict[str, Any]]:
    """A local table's rows, lazily, one record batch at a time (single machine)."""
    from captionkit.errors import require

    pa_dataset = require("pyarrow.dataset", "ray", "reading tables")
    if fmt == "json":
        import pyarrow.json as pj

        table = pj.read_json(path)
        yield from table.to_pylist()
        return
    dataset = pa_dataset.dataset(path, format=fmt)
    for batch in dataset.to_batches(batch_size=batch_rows):
        yield from batch.to_pylist()
