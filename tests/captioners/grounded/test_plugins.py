"""Detectors and writers found by name: built-ins, entry points of other packages, errors."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import numpy as np
import pytest
from PIL import Image

from captionkit.captioners.grounded import detectors, writer_registry
from captionkit.captioners.grounded.detectors import Detector, DetectorOptions, load_detector
from captionkit.captioners.registry import create
from captionkit.errors import ConfigError
from captionkit.types import CaptionRequest


class BoxDetector(Detector):
    """A third-party detector: one ``dog`` box in the middle of every image."""

    name = "box"

    class Options(DetectorOptions):
        size: float = 0.5

    @classmethod
    def from_options(cls, options):
        det = cls(conf=options.conf, max_objects=options.max_objects)
        det.size = options.size
        return det

    def _load(self) -> None:
        pass

    def _raw_batch(self, images):
        out = []
        for im in images:
            h, w = im.shape[:2]
            half = self.size / 2
            box = np.array(
                [[w * (0.5 - half), h * (0.5 - half), w * (0.5 + half), h * (0.5 + half)]]
            )
            out.append((box, np.array([0.9]), np.array([16])))  # COCO80 16: dog
        return out


class EchoWriter:
    """A third-party writer: says how many objects it was given, in the asked style."""

    def __init__(self, colours: bool) -> None:
        self.colours = colours

    @classmethod
    def from_options(cls, options):
        return cls(options.colours)

    def write_batch(self, facts, style="short", n=1, prompt=None, config=None):
        return [[f"{style}: {len(f.objects)} object(s), prompt={prompt}"] for f in facts]


@pytest.fixture
def plugin_package(monkeypatch):
    """A package ``acme_vision`` that declares a detector and a writer as entry points."""
    module = types.ModuleType("acme_vision")
    module.BoxDetector = BoxDetector
    module.EchoWriter = EchoWriter
    monkeypatch.setitem(sys.modules, "acme_vision", module)
    points = {
        "captionkit.detectors": [
            EntryPoint("box", "acme_vision:BoxDetector", "captionkit.detectors"),
            EntryPoint("ssd", "acme_vision:BoxDetector", "captionkit.detectors"),  # no shadowing
        ],
        "captionkit.writers": [EntryPoint("echo", "acme_vision:EchoWriter", "captionkit.writers")],
    }
    find = lambda group: points.get(group, [])  # noqa: E731
    monkeypatch.setattr(detectors.DETECTORS, "_find", find)
    monkeypatch.setattr(writer_registry.WRITERS, "_find", find)
    return module


def test_builtin_names_and_the_error_for_an_unknown_one():
    assert {"ssd", "yolox", "ultralytics"} <= set(detectors.DETECTORS.names())
    with pytest.raises(ConfigError) as err:
        create("grounded", detector="detr")  # at construction, not at the first batch
    assert "unknown detector 'detr'" in str(err.value) and "ssd" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_writer_names_writers_and_text_models():
    with pytest.raises(ConfigError) as err:
        create("grounded", writer="fancy")
    message = str(err.value)
    assert "unknown writer 'fancy'" in message and "template" in message and "gguf:" in message


def test_a_third_party_detector_and_writer_run_without_touching_the_core(plugin_package):
    assert "box" in detectors.DETECTORS.names() and "echo" in writer_registry.WRITERS.names()
    assert detectors.DETECTORS.target("ssd").startswith("captionkit.")  # built-in kept
    det = load_detector("box", conf=0.5, size=0.8)  # its own option passes through
    assert isinstance(det, BoxDetector) and det.size == 0.8
    cap = create("grounded", detector="box", writer="echo", scene=False, colours=False)
    req = CaptionRequest(prompt="hi")
    image = cap.preprocess(Image.new("RGB", (64, 48), (120, 90, 60)), req)
    out = cap.caption_batch([image], req)[0]
    assert out.candidates[0].text.startswith("short: 1 object(s), prompt=hi")
    assert out.extra["facts"]["counts"] == {"dog": 1}


def test_detector_options_are_validated_in_one_line(plugin_package):
    with pytest.raises(ConfigError, match="detector 'box': size"):
        load_detector("box", size="big")
