"""Ultralytics YOLO (optional extra; AGPL-3.0, so never a default or a dependency)."""

from __future__ import annotations

import numpy as np

from captionkit.captioners.grounded.detectors import Detector
from captionkit.errors import ModelLoadError, require

DEFAULT_MODEL = "yolov8n.pt"


class UltralyticsDetector(Detector):
    """Any model ``ultralytics.YOLO`` loads; its own class names are kept as labels."""

    name = "ultralytics"

    def __init__(self, weights: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # Check the dependency at construction so a missing extra fails before any work.
        self._ultralytics = require("ultralytics", "ultralytics", "the 'ultralytics' detector")
        self.weights = weights or DEFAULT_MODEL

    def _load(self) -> None:
        if self.threads is not None:
            import torch

            torch.set_num_threads(int(self.threads))
        try:
            self._model = self._ultralytics.YOLO(self.weights)
        except Exception as exc:  # ultralytics raises many types for a bad path or name
            raise ModelLoadError(f"ultralytics could not load '{self.weights}': {exc}") from None
        names = dict(self._model.names)
        self.labels = [str(names.get(i, i)) for i in range(max(names, default=-1) + 1)]

    def _raw_batch(
        self, images: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Ultralytics reads numpy arrays as BGR; it runs its own NMS, ours then caps and clips.
        bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
        results = self._model.predict(
            bgr, conf=self.conf, iou=self.nms, max_det=self.max_objects, verbose=False
        )
        out = []
        for r in results:
            b = r.boxes
            out.append((b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy()))
        return out
