"""Dataset loaders and candidate readers on small files written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captionkit.errors import InputError
from captionkit.eval.candidates import load_candidates
from captionkit.eval.datasets import load_dataset


def test_references_json_folder(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset)
    assert len(ds) == 4 and ds.kind == "references.json"
    item = ds.items[0]
    assert item.key == "a.jpg" and item.image == tiny_dataset / "images" / "a.jpg"
    assert item.image.exists() and len(item.references) == 3
    assert len(ds.limit(2)) == 2
    assert load_dataset(tiny_dataset / "references.json").references() == ds.references()


def test_flickr_token_file_with_splits(tmp_path: Path) -> None:
    (tmp_path / "Flicker8k_Dataset").mkdir()
    lines = [f"{n}.jpg#{i}\t{n} caption {i} ." for n in ("a", "b", "c") for i in range(5)]
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text("c.jpg\n")
    ds = load_dataset(token)
    assert len(ds) == 3 and ds.items[0].references[4] == "a caption 4 ."
    assert ds.items[0].image.parent.name == "Flicker8k_Dataset"
    test = load_dataset(tmp_path, split="test")
    assert [it.key for it in test] == ["c.jpg"] and test.items[0].split == "test"


def test_coco_captions_json(tmp_path: Path) -> None:
    (tmp_path / "val2014").mkdir()
    (tmp_path / "val2014" / "x.jpg").write_bytes(b"")
    data = {
        "images": [{"id": 7, "file_name": "x.jpg"}, {"id": 9, "file_name": "y.jpg"}],
        "annotations": [
            {"image_id": 7, "caption": "A cat."},
            {"image_id": 7, "caption": "A kitten."},
            {"image_id": 9, "caption": "A dog."},
        ],
    }
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(data))
    ds = load_dataset(path)
    assert ds.kind == "coco" and ds.root == tmp_path / "val2014"
    assert ds.references() == {"x.jpg": ["A cat.", "A kitten."], "y.jpg": ["A dog."]}
    assert ds.items[0].image_id == 7


def test_karpathy_split_json(tmp_path: Path) -> None:
    def image(i: int, split: str) -> dict:
        sents = [{"raw": f"raw {i}", "tokens": ["tok"]}]
        return {"filepath": "val2014", "filename": f"{i}.jpg", "split": split, "cocoid": i,
                "sentences": sents}  # fmt: skip

    data = {"dataset": "coco", "images": [image(1, "train"), image(2, "restval"), image(3, "test")]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    assert len(load_dataset(path)) == 3
    assert [it.key for it in load_dataset(path, split="train")] == [
        "val2014/1.jpg",
        "val2014/2.jpg",
    ]
    test = load_dataset(path, split="test")
    assert test.items[0].references == ["raw 3"] and test.items[0].image_id == 3


def test_folder_with_sidecars(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("one", "two", "three"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    (tmp_path / "one.txt").write_text("A black square.\nA dark image.\n")
    (tmp_path / "two.txt").write_text("Nothing here.\n")
    ds = load_dataset(tmp_path)
    assert ds.kind == "sidecar" and [it.key for it in ds] == ["one.png", "two.png"]
    assert ds.items[0].references == ["A black square.", "A dark image."]


def test_missing_dataset_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="sidecar"):
        load_dataset(tmp_path / "empty")


def test_hf_datasets_is_optional(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    from captionkit.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="captionkit\\[eval\\]"):
        load_dataset("hf:some/dataset")


def test_candidates_formats(tiny_dataset: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        json.dumps({"source": str(tiny_dataset / "images" / "a.jpg"), "text": "a dog"}) + "\n"
        + json.dumps({"image": "b.jpg", "caption": "two men"}) + "\n"
        + json.dumps({"image": "zzz.jpg", "caption": "unmatched"}) + "\n"
    )  # fmt: skip
    assert load_candidates(jsonl, ds) == {"a.jpg": "a dog", "b.jpg": "two men"}
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('file,caption\nc.jpg,a cat\nd.jpg,"a child, a ball"\n')
    assert load_candidates(csv_path, ds) == {"c.jpg": "a cat", "d.jpg": "a child, a ball"}
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"a.jpg": "x", "c.jpg": ["y", "z"]}))
    assert load_candidates(mapping, ds) == {"a.jpg": "x", "c.jpg": "y"}


def test_coco_results_by_image_id(tmp_path: Path) -> None:
    data = {"images": [{"id": 7, "file_name": "x.jpg"}],
            "annotations": [{"image_id": 7, "caption": "A cat."}]}  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(data))
    ds = load_dataset(tmp_path / "ann.json")
    res = tmp_path / "results.json"
    res.write_text(json.dumps([{"image_id": 7, "caption": "a cat on a mat"}]))
    assert load_candidates(res, ds) == {"x.jpg": "a cat on a mat"}
    res.write_text(json.dumps([{"image_id": 8, "caption": "nothing matches"}]))
    with pytest.raises(InputError, match="no caption matches"):
        load_candidates(res, ds)
