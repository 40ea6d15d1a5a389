"""Batch in, batch out: the driver a Ray Data actor (or any dataframe ``map``) calls.

    class Captioning:                       # a Ray Data actor, written by the cluster room
        def __init__(self, spec):           self.captioner = registry.create(spec)
        def __call__(self, batch):          return caption_records(self.captioner, batch)

``records`` is either a list of dicts (one per image) or a dict of columns (Ray Data's
``numpy`` batch format, a ``pyarrow``/``pandas`` batch turned into a dict). The answer has the
same shape with a ``caption`` and an ``error`` column added (None where not applicable), in
input order. An image cell may be a PIL image, encoded bytes, an ``{"bytes": ..., "path": ...}``
struct (Hugging Face / Parquet images), a ``HxWxC`` uint8 array, or a path or URL string.

Nothing here holds state between calls apart from what the caller passes in (the loaded
captioner, an optional store, and optionally a :class:`RepeatGuard` kept on the actor so a
backend bug stops the job after three batches instead of failing every row). No ray import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from captionkit.captioners.base import Captioner
from captionkit.engine.stages import (
    Prepared,
    RepeatGuard,
    RunOptions,
    Stages,
    check_request,
)
from captionkit.engine.store import ResultStore
from captionkit.errors import InputError
from captionkit.inputs.sources import Source, is_url
from captionkit.types import CaptionRequest, CaptionResult

Records = list[dict[str, Any]] | dict[str, Any]


def _to_source(cell: Any, key: str) -> tuple[Source, bytes | None]:
    """One image cell as a Source (plus its bytes when it carries them)."""
    if isinstance(cell, Mapping):  # {"bytes": b"...", "path": "x.jpg"} (HF datasets, Parquet)
        data, path = cell.get("bytes"), cell.get("path")
        if data:
            return Source(key=str(path or key)), bytes(data)
        cell = path
    if isinstance(cell, bytes | bytearray | memoryview):
        return Source(key=key), bytes(cell)
    if isinstance(cell, str | Path):
        text = str(cell)
        if is_url(text):
            return Source(key=text, url=text), None
        return Source(key=text, path=Path(text)), None
    if hasattr(cell, "__array_interface__") and not hasattr(cell, "mode"):  # numpy HxWxC
        from PIL import Image

        return Source(key=key, image=Image.fromarray(cell)), None
    if hasattr(cell, "mode") and hasattr(cell, "size"):  # a PIL image
        return Source(key=key, image=cell), None
    raise InputError(f"row {key}: cannot read an image from a {type(cell).__name__}")


def _rows(records: Records) -> tuple[list[dict[str, Any]], bool]:
    """Rows as dicts, and whether the input was a dict of columns."""
    if isinstance(records, Mapping):
        columns = {k: list(v) for k, v in records.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        return [{k: v[i] for k, v in columns.items()} for i in range(n)], True
    return list(records), False


def caption_records(
    captioner: Captioner,
    records: Records,
    request: CaptionRequest | None = None,
    *,
    image_column: str = "image",
    key_column: str | None = None,
    caption_column: str = "caption",
    error_column: str = "error",
    store: ResultStore | None = None,
    options: RunOptions | None = None,
    guard: RepeatGuard | None = None,
) -> Records:
    """Caption every row of ``records``; the same shape comes back with two columns added.

    Per-row failures land in ``error_column``; a run-wide ``CaptionkitError`` (bad key,
    missing package, a backend bug caught by ``guard``) is raised, failing the whole call,
    which is what a Ray task retry or job failure wants.
    """
    request = request or CaptionRequest()
    check_request(captioner, request)
    options = options or RunOptions()
    stages = Stages(captioner, store=store, options=options)
    rows, columnar = _rows(records)
    if rows and image_column not in rows[0]:
        raise InputError(f"records have no '{image_column}' column (columns: {', '.join(rows[0])})")
    fp = request.fingerprint()

    def prepare(i: int) -> Prepared:
        row = rows[i]
        key = str(row[key_column]) if key_column else f"row-{i}"
        source, data = _to_source(row[image_column], key)
        if options.render is not None:  # {column:NAME} templates read the row's other cells
            meta = {k: v for k, v in row.items() if k != image_column}
            source = dataclasses.replace(source, meta=meta)
        return stages.prepare(source, request, fp, data)

    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        prepared = list(pool.map(prepare, range(len(rows))))
    batch_size = max(1, options.batch_size or captioner.default_batch_size)
    guard = guard or RepeatGuard(captioner.name)
    results: list[CaptionResult] = []
    for start in range(0, len(prepared), batch_size):
        chunk = prepared[start : start + batch_size]
        todo = [p for p in chunk if p.input is not None]
        inputs = [p.input for p in todo]
        requests = [p.request or request for p in todo]  # rendered templates differ
        captioned = stages.caption(inputs, requests, guard) if inputs else None
        done = stages.finish(chunk, captioned, request)
        if done.store_error is not None:
            raise done.store_error
        if captioned is not None and captioned.stop is not None:
            raise captioned.stop
        results.extend(done.results)
    captions = [r.text if r.ok else None for r in results]
    errors = [None if r.ok else (r.error or "failed") for r in results]
    if columnar and isinstance(records, Mapping):
        out = dict(records)
        out[caption_column] = _like(records, captions)
        out[error_column] = _like(records, errors)
        return out
    return [
        {**row, caption_column: c, error_column: e}
        for row, c, e in zip(rows, captions, errors, strict=True)
    ]


def _like(columns: Mapping[str, Any], values: Sequence[Any]) -> Any:
    """A new column in the container type of the others (numpy in, numpy out)."""
    if any(hasattr(v, "__array_interface__") for v in columns.values()):
        import numpy as np

        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out
    return list(values)
