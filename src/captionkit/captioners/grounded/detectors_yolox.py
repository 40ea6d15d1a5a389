"""YOLOX (Megvii, Apache-2.0) ONNX exports run with onnxruntime.

Pre- and post-processing follow the YOLOX ONNX demo (``yolox/data/data_augment.py`` preproc
and ``yolox/utils/demo_utils.py`` demo_postprocess), re-written here in numpy because the
``yolox`` package drags in torch and training code for two small functions: letterbox to the
model's square input (top-left, pad 114), BGR 0-255 without normalisation, then decode the
anchor-free grid outputs with strides 8/16/32 and score = objectness x class probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from captionkit.captioners.grounded.detectors import Detector, DetectorOptions, set_cv2_threads
from captionkit.captioners.grounded.weights import local_weights, yolox_nano_weights
from captionkit.errors import ModelLoadError

STRIDES = (8, 16, 32)
PAD_VALUE = 114


def letterbox(image_rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """RGB HxWx3 -> (3, size, size) float32 BGR letterboxed at the top-left, and the scale."""
    import cv2

    h, w = image_rgb.shape[:2]
    ratio = min(size / h, size / w)
    nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
    resized = cv2.resize(image_rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:nh, :nw] = resized[:, :, ::-1]  # RGB -> BGR, as the demo feeds cv2.imread output
    return canvas.transpose(2, 0, 1).astype(np.float32), ratio


def grid_decode(raw: np.ndarray, size: int) -> np.ndarray:
    """Decode (N, 4+1+C) head outputs to (cx, cy, w, h) in input pixels, in place of columns 0-3."""
    grids, strides = [], []
    for step in STRIDES:
        n = size // step
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((n * n, 1), step))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(strides).astype(np.float32)
    if grid.shape[0] != raw.shape[0]:
        raise ModelLoadError(
            f"YOLOX output has {raw.shape[0]} rows but a {size}px input implies {grid.shape[0]}; "
            "is this a YOLOX export with decode_in_inference=False?"
        )
    out = raw.astype(np.float32, copy=True)
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


class YOLOXDetector(Detector):
    """YOLOX-nano by default; any YOLOX ONNX with a square input works via ``weights``."""

    name = "yolox"

    @classmethod
    def from_options(cls, options: DetectorOptions) -> Detector:
        o = options
        return cls(
            weights=o.weights, conf=o.conf, nms=o.nms, max_objects=o.max_objects, threads=o.threads
        )

    def __init__(self, weights: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A wrong local path fails now, not at the first batch.
        self.weights = local_weights(weights) if weights else None

    def _load(self) -> None:
        import onnxruntime as ort

        set_cv2_threads(self.threads)
        path = self.weights or yolox_nano_weights()
        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"onnxruntime could not load {path}: {exc}") from None
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        size = inp.shape[-1]
        self.size = int(size) if isinstance(size, int) else 416
        # A dynamic batch axis lets a whole batch run at once; the nano export has batch 1.
        self._batchable = not isinstance(inp.shape[0], int)

    def _raw_batch(
        self, images: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        prepared = [letterbox(im, self.size) for im in images]
        tensors = np.stack([t for t, _ in prepared])
        if self._batchable:
            outputs = self._session.run(None, {self._input: tensors})[0]
        else:
            outputs = np.concatenate(
                [self._session.run(None, {self._input: t[None]})[0] for t in tensors]
            )
        results = []
        for raw, (_, ratio) in zip(outputs, prepared, strict=True):
            dec = grid_decode(raw, self.size)
            cls_scores = dec[:, 5:] * dec[:, 4:5]
            classes = cls_scores.argmax(axis=1)
            scores = cls_scores[np.arange(len(classes)), classes]
            keep = scores >= self.conf  # cheap pre-filter before building boxes
            cx, cy, w, h = (dec[keep, i] for i in range(4))
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) / ratio
            results.append((boxes, scores[keep], classes[keep]))
        return results
