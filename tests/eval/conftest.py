"""Fixtures for the evaluation tests: the Flickr8k dev sample and a tiny on-disk dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FLICKR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "flickr8k-dev"


def java_available() -> bool:
    if shutil.which("java") is None:
        return False
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def flickr_refs() -> dict[str, list[str]]:
    path = FLICKR / "references.json"
    if not path.exists():
        pytest.skip(f"needs ../shared beside the repo ({path} is absent)")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """Four coloured images with references.json, in the flickr8k-dev layout."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    refs = {
        "a.jpg": ["A dog runs on the grass .", "A brown dog running in a field", "dog in grass"],
        "b.jpg": ["Two men ride bikes down a street .", "Men on bicycles", "cyclists in a city"],
        "c.jpg": ["A cat sleeps on a couch .", "A kitten naps on the sofa", "cat on couch"],
        "d.jpg": ["A child plays with a ball .", "A kid kicks a ball", "a boy with a soccer ball"],
    }
    for i, name in enumerate(refs):
        Image.new("RGB", (64, 48), (60 * i, 100, 200 - 40 * i)).save(images / name)
    (tmp_path / "references.json").write_text(json.dumps(refs), encoding="utf-8")
    return tmp_path
