"""Reference datasets: images plus human captions, from the formats researchers actually have.

:func:`load_dataset` recognises, from the path alone:

* a ``references.json`` (file name -> list of captions), images in ``images/`` beside it or in
  the same folder (the format of ``../shared/data/flickr8k-dev``);
* Flickr8k / Flickr30k token files (``name.jpg#0<TAB>caption``), splits from
  ``Flickr_8k.{train,dev,test}Images.txt`` when present;
* COCO captions JSON (``images`` + ``annotations``);
* the Karpathy split JSON (``dataset_coco.json`` ...; ``split="train"`` includes ``restval``);
* a folder of images with sidecar ``.txt`` files (one reference per line);
* ``hf:NAME`` for a Hugging Face dataset when ``datasets`` is installed.

Every item is keyed by the image's path relative to the image root, which is also how
candidate files are matched to it (see :mod:`captionkit.eval.candidates`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class DatasetItem:
    """One image and its human references."""

    image: Path
    references: list[str]
    key: str
    split: str | None = None
    image_id: int | str | None = None


@dataclass
class CaptionDataset:
    """A named list of :class:`DatasetItem`, in a stable order."""

    name: str
    items: list[DatasetItem]
    root: Path | None = None
    kind: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self.items)

    def references(self) -> dict[str, list[str]]:
        """Key -> reference captions, the shape every metric takes."""
        return {it.key: it.references for it in self.items}

    def limit(self, n: int | None) -> CaptionDataset:
        """The first ``n`` items (all when ``n`` is None), for quick runs."""
        if n is None or n >= len(self.items):
            return self
        return CaptionDataset(self.name, self.items[:n], self.root, self.kind, self.meta)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def _clean(captions) -> list[str]:
    return [str(c).strip() for c in captions if str(c).strip()]


def _from_references_json(path: Path, data: dict, image_root: Path | None) -> CaptionDataset:
    root = image_root
    if root is None:
        root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    items = []
    for name, caps in data.items():
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list):
            raise InputError(f"{path}: {name!r} should map to a list of captions")
        items.append(DatasetItem(root / name, _clean(caps), key=str(name)))
    return CaptionDataset(path.parent.name, items, root, "references.json")


def _from_coco(path: Path, data: dict, image_root: Path | None) -> CaptionDataset:
    root = image_root or _guess_root(path, [im["file_name"] for im in data["images"][:1]])
    by_id: dict = {im["id"]: im for im in data["images"]}
    caps: dict = {}
    for ann in data["annotations"]:
        caps.setdefault(ann["image_id"], []).append(ann["caption"])
    items = [
        DatasetItem(root / im["file_name"], _clean(caps[i]), im["file_name"], None, i)
        for i, im in by_id.items()
        if i in caps
    ]
    return CaptionDataset(path.stem, items, root, "coco")


def _from_karpathy(
    path: Path, data: dict, split: str | None, image_root: Path | None
) -> CaptionDataset:
    images = data["images"]
    rel = [str(Path(im.get("filepath", "")) / im["filename"]) for im in images[:1]]
    root = image_root or _guess_root(path, rel)
    wanted = {split, "restval"} if split == "train" else {split}
    items = []
    for im in images:
        if split is not None and im.get("split") not in wanted:
            continue
        rel_path = str(Path(im.get("filepath", "")) / im["filename"])
        refs = _clean(s.get("raw") or " ".join(s.get("tokens", [])) for s in im["sentences"])
        image_id = im.get("cocoid", im.get("imgid"))
        items.append(DatasetItem(root / rel_path, refs, rel_path, im.get("split"), image_id))
    name = f"{data.get('dataset', path.stem)}-karpathy" + (f"-{split}" if split else "")
    return CaptionDataset(name, items, root, "karpathy")


def _guess_root(path: Path, sample: list[str]) -> Path:
    """The folder under which a JSON file's relative image paths exist (best effort)."""
    candidates = [path.parent, path.parent.parent, path.parent / "images"]
    candidates += [p for p in path.parent.iterdir() if p.is_dir()] if path.parent.is_dir() else []
    for cand in candidates:
        if sample and (cand / sample[0]).exists():
            return cand
    return path.parent


def _flickr_split_files(folder: Path) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    for name, split in (("trainImages", "train"), ("devImages", "val"), ("testImages", "test")):
        for f in folder.glob(f"*{name}.txt"):
            lines = f.read_text(encoding="utf-8").split()
            splits[split] = set(lines)
    return splits


def _from_flickr_tokens(path: Path, split: str | None, image_root: Path | None) -> CaptionDataset:
    caps: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, _, text = line.partition("\t")
        if not text:  # some copies use spaces after "#n"
            name, _, text = line.partition(" ")
        caps.setdefault(name.split("#")[0].strip(), []).append(text.strip())
    root = image_root
    if root is None:
        for cand in ("Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "images"):
            for base in (path.parent, path.parent.parent):
                if (base / cand).is_dir():
                    root = base / cand
                    break
            if root:
                break
        root = root or path.parent
    split_of: dict[str, str] = {}
    for s, names in _flickr_split_files(path.parent).items():
        for n in names:
            split_of[n] = s
    if split is not None:
        alias = {"dev": "val", "validation": "val"}.get(split, split)
        if not split_of:
            raise InputError(f"no Flickr split files (*{alias}Images.txt) beside {path}")
        split = alias
    items = [
        DatasetItem(root / n, _clean(c), n, split_of.get(n))
        for n, c in caps.items()
        if split is None or split_of.get(n) == split
    ]
    return CaptionDataset(path.stem, items, root, "flickr")


def _from_sidecars(folder: Path) -> CaptionDataset:
    items = []
    for img in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = img.with_suffix(".txt")
        if txt.exists():
            refs = _clean(txt.read_text(encoding="utf-8").splitlines())
            if refs:
                items.append(DatasetItem(img, refs, str(img.relative_to(folder))))
    if not items:
        raise InputError(f"{folder}: no references.json, token file or images with sidecar .txt")
    return CaptionDataset(folder.name, items, folder, "sidecar")


def _from_hf(name: str, split: str | None) -> CaptionDataset:
    from captionkit.errors import require

    hf = require("datasets", "eval", "Hugging Face datasets")
    from platformdirs import user_cache_dir

    split = split or "test"
    ds = hf.load_dataset(name, split=split)
    cache = Path(user_cache_dir("captionkit")) / "datasets" / name.replace("/", "__") / split
    cache.mkdir(parents=True, exist_ok=True)
    items = []
    for i, row in enumerate(ds):
        refs: Any = next(
            (row[c] for c in ("captions", "caption", "sentences", "text") if c in row), []
        )
        if isinstance(refs, str):
            refs = [refs]
        refs = [r.get("raw", "") if isinstance(r, dict) else r for r in refs]
        image = row.get("image")
        key = str(row.get("filename") or row.get("file_name") or f"{i:06d}.jpg")
        target = cache / Path(key).name
        if not target.exists() and image is not None:
            image.convert("RGB").save(target.with_suffix(".jpg"), quality=95)
            target = target.with_suffix(".jpg")
        items.append(DatasetItem(target, _clean(refs), key, split))
    return CaptionDataset(name, items, cache, "hf")


def load_dataset(
    path: str | Path, split: str | None = None, *, image_root: str | Path | None = None
) -> CaptionDataset:
    """Load images and references from ``path`` (any format in this module's docstring).

    ``split`` filters Karpathy JSON and Flickr token files ("train", "val"/"dev", "test");
    ``image_root`` overrides where images are looked for.
    """
    root = Path(image_root) if image_root else None
    if isinstance(path, str) and path.startswith("hf:"):
        return _from_hf(path[3:], split)
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"dataset not found: {p}")
    if p.is_dir():
        for name in ("references.json", "captions.json"):
            if (p / name).exists():
                return load_dataset(p / name, split, image_root=image_root)
        tokens = sorted(p.glob("*.token*")) + sorted(p.glob("*token*.txt"))
        if tokens:
            return _from_flickr_tokens(tokens[0], split, root)
        return _from_sidecars(p)
    if p.suffix == ".json":
        data = _read_json(p)
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            return _from_coco(p, data, root)
        if (
            isinstance(data, dict)
            and "images" in data
            and data["images"]
            and ("sentences" in data["images"][0])
        ):
            return _from_karpathy(p, data, split, root)
        if isinstance(data, dict):
            return _from_references_json(p, data, root)
        raise InputError(f"{p}: not a references, COCO or Karpathy JSON file")
    if "token" in p.name or p.suffix in {".txt", ".token"}:
        return _from_flickr_tokens(p, split, root)
    raise InputError(f"{p}: unknown dataset format (see `captionkit eval --help`)")
