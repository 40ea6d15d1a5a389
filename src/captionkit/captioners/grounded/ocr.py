"""Text in the picture (signs, shirts, banners) via RapidOCR's PP-OCRv4 ONNX models.

``rapidocr-onnxruntime`` ships its detection, orientation and recognition models in the
wheel (Apache-2.0), so reading text works offline. It takes one image per call, so a batch
is a loop over one engine built once. Only legible spans are kept: a caption that quotes
garbled OCR is worse than one that quotes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from captionkit.errors import ModelLoadError, require


@dataclass
class TextSpan:
    """One line of text read from the image: text, recogniser confidence, box (x1, y1, x2, y2)."""

    text: str
    score: float
    box: tuple[float, float, float, float]


class OCRReader:
    """RapidOCR engine, built on first use; keeps spans scoring at least ``min_score`` whose
    text has at least ``min_chars`` letters or digits."""

    def __init__(
        self,
        min_score: float = 0.75,
        min_chars: int = 2,
        max_spans: int = 10,
        threads: int | None = None,
        det_side: int = 512,
    ) -> None:
        self.min_score = min_score
        self.det_side = det_side
        self.min_chars = min_chars
        self.max_spans = max_spans
        self.threads = threads
        self._lock = threading.Lock()
        self._engine: Any = None  # RapidOCR, built on first use

    def load(self) -> OCRReader:
        with self._lock:
            if self._engine is None:
                module = require("rapidocr_onnxruntime", "grounded", "reading text in images")
                # RapidOCR's default scales the shorter side up to 736 px before detection;
                # 512 keeps most legible text in 500 px photos at about half the time.
                options: dict[str, object] = {
                    "det_limit_type": "min",
                    "det_limit_side_len": int(self.det_side),
                }
                if self.threads is not None:
                    options["intra_op_num_threads"] = int(self.threads)
                    options["inter_op_num_threads"] = 1
                try:
                    self._engine = module.RapidOCR(**options)
                except Exception as exc:  # its loader raises bare Exceptions for bad models
                    raise ModelLoadError(f"RapidOCR could not load its models: {exc}") from None
        return self

    def read(self, image: np.ndarray) -> list[TextSpan]:
        return self.read_batch([image])[0]

    def read_batch(self, images: list[np.ndarray]) -> list[list[TextSpan]]:
        """Legible text spans per RGB uint8 image, top-to-bottom, left-to-right."""
        if not images:
            return []
        self.load()
        return [self._read_one(image) for image in images]

    def _read_one(self, image: np.ndarray) -> list[TextSpan]:
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        bgr = np.ascontiguousarray(image[:, :, 2::-1])  # RapidOCR reads arrays as BGR
        with self._lock:  # one engine; onnxruntime sessions are fine, RapidOCR's state is not
            result, _ = self._engine(bgr)
        spans = []
        for points, text, score in result or []:
            text = " ".join(str(text).split())
            if float(score) < self.min_score or sum(c.isalnum() for c in text) < self.min_chars:
                continue
            pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            x1, y1 = pts.min(axis=0)
            x2, y2 = pts.max(axis=0)
            box = (
                round(float(x1), 1),
                round(float(y1), 1),
                round(float(x2), 1),
                round(float(y2), 1),
            )
            spans.append(TextSpan(text=text, score=round(float(score), 4), box=box))
        return spans[: self.max_spans]


def load_ocr(
    min_score: float = 0.75,
    min_chars: int = 2,
    max_spans: int = 10,
    threads: int | None = None,
    det_side: int = 512,
) -> OCRReader:
    """The OCR reader; its models load on first use (or ``.load()``).

    ``det_side``: the shorter image side the text detector works at (bigger finds smaller
    text, slower).
    """
    return OCRReader(min_score, min_chars, max_spans, threads, det_side)
