"""The run's inputs as one Ray Dataset of rows ``{__id, __image, <carried columns>}``.

Folders, files and URLs are listed on the driver (a walk yields names only, no pixels) and
handed to Ray as items; tables, HF datasets and WebDataset shards are read by Ray Data's own
readers in parallel Ray tasks. A normalising task then renames the image column to
``__image`` and gives each row its ``__id`` (a path/URL cell is its id; bytes get
``sha256:<hash>``, hashed in that task), and drops every row whose id the output already
holds: that is the resume, done before a row reaches an actor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionkit.cluster.actor import ID, IMAGE
from captionkit.errors import InputError
from captionkit.inputs.tables import WDS_IMAGE_KEYS, TableInput, classify, pick_image_column

if TYPE_CHECKING:
    from captionkit.session import RunSpec

#: Rows per block of listed files: small enough that actors share the work early.
ROWS_PER_BLOCK = 64
MIN_BLOCKS = 16


def normalize(batch: Any, image_column: str, done: frozenset[str], shard_ids: bool) -> Any:
    """One batch (pyarrow) -> the same rows with ``__id``/``__image``, minus done ids."""
    import pyarrow as pa

    from captionkit.inputs.decode import content_hash
    from captionkit.inputs.tables import row_id

    cells = batch.column(image_column).to_pylist()
    ids: list[str] = []
    if shard_ids:  # WebDataset: the sample key, unique within its shard
        urls, keys = batch.column("__url__").to_pylist(), batch.column("__key__").to_pylist()
        ids = [f"{Path(str(u)).name}#{k}" for u, k in zip(urls, keys, strict=True)]
    for i, cell in enumerate(cells):
        if shard_ids:
            continue
        rid = row_id(cell)
        if rid is None:
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            rid = f"sha256:{content_hash(bytes(data))}" if data else f"row:{i}"
        ids.append(rid)
    rest = [n for n in batch.schema.names if n not in (image_column, "__key__", "__url__")]
    table = pa.table(
        {
            ID: pa.array(ids, pa.string()),
            IMAGE: batch.column(image_column),
            **{n: batch.column(n) for n in rest},
        }
    )
    if not done:
        return table
    keep = pa.array([rid not in done for rid in ids], pa.bool_())
    return table.filter(keep)


def _files(run: RunSpec, done: set[str]) -> tuple[Any, int]:
    import ray.data

    from captionkit import session

    rows = []
    for source in session.sources(run):
        # Absolute paths: the same image has the same id from any working folder (resume),
        # and every node of a cluster reads it from the same shared path.
        key = source.url or os.path.abspath(source.path if source.path else source.key)
        if key in done:
            continue
        rows.append({ID: key, IMAGE: key})
    if not rows:
        return None, 0
    # At least MIN_BLOCKS blocks, so every actor gets work from the start on a small job.
    blocks = max(1, min(len(rows), max(MIN_BLOCKS, -(-len(rows) // ROWS_PER_BLOCK))))
    return ray.data.from_items(rows, override_num_blocks=blocks), len(rows)


def _read(item: TableInput, split: str | None) -> Any:
    import ray.data

    if item.kind == "table":
        path = item.location
        if not path.startswith(("s3://", "gs://", "http")) and not Path(path).exists():
            raise InputError(f"{path}: no such file")
        if item.fmt == "parquet":
            return ray.data.read_parquet(path)
        if item.fmt == "csv":
            return ray.data.read_csv(path)
        return ray.data.read_json(path, lines=True)
    if item.kind == "webdataset":
        missing = [p for p in item.paths if "://" not in p and not Path(p).exists()]
        if missing:
            raise InputError(
                f"{missing[0]}: no such shard ({len(missing)} of {len(item.paths)} missing)"
            )
        return ray.data.read_webdataset(list(item.paths), decoder=None)
    from captionkit.errors import require

    datasets = require("datasets", "ray", "Hugging Face dataset inputs")
    try:
        ds = datasets.load_dataset(item.location, split=split)
    except Exception as exc:
        raise InputError(
            f"hf:{item.location}: cannot load the dataset ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(f"hf:{item.location} has splits {', '.join(ds)}: name one with --split")
    if getattr(ds, "_indices", None) is not None:  # a filtered/shuffled view: materialise it
        ds = ds.flatten_indices()
    # The Arrow table itself (memory-mapped from the datasets cache): no copy, and none of
    # ray.data.from_huggingface's hub-streaming dependencies.
    return ray.data.from_arrow(ds.data.table)


def build_dataset(run: RunSpec, done: set[str]) -> tuple[Any, int | None]:
    """The Dataset of rows still to caption, and how many when that is known up front."""
    items = [classify(i) for i in run.inputs.items]
    tables = [i for i in items if i.kind != "files"]
    if not tables:
        return _files(run, done)
    if len(items) > 1:
        raise InputError(
            "give one table, dataset or shard pattern per cluster run (or only files and folders)"
        )
    item = tables[0]
    ds = _read(item, run.inputs.split)
    columns = list(ds.schema().names)
    if item.kind == "webdataset" and run.inputs.image_column is None:
        image = next((k for k in WDS_IMAGE_KEYS if k in columns), None)
        if image is None:
            raise InputError(
                f"{item.location}: no image entries ({', '.join(WDS_IMAGE_KEYS)}) in the shards"
            )
    else:
        image = pick_image_column(columns, run.inputs.image_column, item.location)
    if run.prompts is not None:  # {column:NAME} in a prompt: one line now, not per row
        run.prompts.check_columns(columns, what=item.location)
    ds = ds.map_batches(
        normalize,
        batch_format="pyarrow",
        fn_kwargs={
            "image_column": image,
            "done": frozenset(done),
            "shard_ids": item.kind == "webdataset",
        },
    )
    return ds, None
