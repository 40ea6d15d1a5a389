"""Captions a user brings: JSONL, CSV or COCO-results files, matched to a dataset's images.

A row names its image by any of ``key``/``image``/``file``/``file_name``/``filename``/
``path``/``source`` (matched against the dataset key, then the file name alone) or by a COCO
``image_id``; its text is ``caption``/``text``/``candidate``. captionkit's own JSONL and CSV
sinks (``source`` + ``text``) load as they are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from captionkit.errors import InputError
from captionkit.eval.datasets import CaptionDataset

_NAME_FIELDS = ("key", "image", "file", "file_name", "filename", "path", "source", "image_path")
_TEXT_FIELDS = ("caption", "text", "candidate", "prediction", "output")


def _rows(path: Path) -> Iterable[dict]:
    try:
        if path.suffix.lower() == ".csv":
            with path.open(encoding="utf-8", newline="") as fh:
                yield from csv.DictReader(fh)
            return
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    stripped = text.lstrip()
    if stripped.startswith("["):  # COCO results: [{"image_id": ..., "caption": ...}]
        try:
            yield from json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc})") from exc
        return
    if stripped.startswith("{") and path.suffix.lower() == ".json":
        data = json.loads(text)  # {"name.jpg": "caption"}
        for k, v in data.items():
            yield {"key": k, "caption": v if isinstance(v, str) else v[0]}
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: invalid JSON line ({exc})") from exc


def load_candidates(path: str | Path, dataset: CaptionDataset) -> dict[str, str]:
    """Read a candidates file and return dataset key -> caption (first caption per image).

    Rows that match no dataset image are ignored; if none match, that is an error naming
    an example, because it almost always means the wrong file or dataset.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"candidates file not found: {p}")
    by_key = {it.key: it.key for it in dataset.items}
    by_name: dict[str, str] = {}
    for it in dataset.items:
        by_name.setdefault(Path(it.key).name, it.key)
        by_name.setdefault(it.image.name, it.key)
    by_id = {str(it.image_id): it.key for it in dataset.items if it.image_id is not None}
    out: dict[str, str] = {}
    unmatched: list[str] = []
    for row in _rows(p):
        if not isinstance(row, dict):
            raise InputError(f"{p}: each record must be an object with an image and a caption")
        text = next((row[f] for f in _TEXT_FIELDS if row.get(f) is not None), None)
        if text is None:
            continue
        key = None
        if row.get("image_id") is not None:
            key = by_id.get(str(row["image_id"]))
        for f in _NAME_FIELDS:
            if key is None and row.get(f):
                name = str(row[f])
                key = by_key.get(name) or by_name.get(Path(name).name)
        if key is None:
            names = [row[f] for f in _NAME_FIELDS if row.get(f)]
            unmatched.append(str(row.get("image_id") or (names[0] if names else "?")))
            continue
        out.setdefault(key, str(text))
    if not out:
        example = unmatched[0] if unmatched else "no rows with a caption"
        raise InputError(f"{p}: no caption matches an image of {dataset.name} (e.g. {example})")
    return out
