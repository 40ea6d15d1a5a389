"""Ultralytics YOLO (optional extra; AGPL-3.0, so never a default or a dependency).

Checked against ultralytics 8.4 (torch 2.14.1, torchvision 0.29.1, CPU) with a YOLOv8n built
from its yaml (random weights); see ``scripts/ultralytics_env.sh`` and
``tests/captioners/grounded/test_ultralytics_slow.py``. What this module adds over a bare
``YOLO(weights).predict``:

* a weights value that looks like a path must be a local file: ultralytics would otherwise
  try to download any missing file whose name matches one of its release assets
  (``/no/such/yolov8n.pt``), and it renames local ``yolov5n.pt``-style files to a ``...u.pt``
  it then downloads; both are refused here with a one-line error instead;
* a checkpoint without class names (built from a yaml: names ``"0"``..``"79"``) is read as
  COCO's 80 classes in Ultralytics' order, so captions say "person", not "0";
* ``device`` goes through captionkit's device resolver ("auto", "cpu", "cuda:1", ...);
* any failure to import (ultralytics present but torchvision broken, the usual case beside a
  mismatched torch) or to load is one line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from captionkit.captioners.grounded.detectors import COCO80, Detector, DetectorOptions
from captionkit.errors import ConfigError, MissingDependencyError, ModelLoadError

#: What ultralytics loads (and downloads into the working folder) when no weights are given.
DEFAULT_MODEL = "yolov8n.pt"
#: Model tasks whose results carry ``boxes`` (obb and classify models do not).
BOX_TASKS = ("detect", "segment", "pose")
WEIGHTS_HINT = "pass -o detector_weights=PATH to a local .pt file"
#: Devices this detector accepts (captionkit's spelling; ultralytics reads them all).


def _one_line(exc: BaseException) -> str:
    """Ultralytics' messages carry emoji and newlines; keep the first meaningful line."""
    lines = [ln.strip(" ❌⚠️") for ln in str(exc).splitlines() if ln.strip(" ❌⚠️")]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _is_path(weights: str) -> bool:
    """Whether ``weights`` names a file rather than a model ultralytics knows by name."""
    return (
        Path(weights).expanduser().exists()
        or any(sep in weights for sep in ("/", "\\"))
        or weights.startswith(("~", "."))
    )


def import_ultralytics() -> Any:
    """``import ultralytics`` with one-line errors for a missing and for a broken install."""
    import importlib
    import importlib.util

    try:
        found = importlib.util.find_spec("ultralytics") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError("ultralytics", "ultralytics", "the 'ultralytics' detector")
    try:
        return importlib.import_module("ultralytics")
    except Exception as exc:  # installed but broken: torchvision ops missing, wrong torch
        raise ModelLoadError(
            f"ultralytics is installed but does not import ({_one_line(exc)}); "
            "install a torch and a torchvision built for each other"
        ) from None


def coco_labels(names: dict[int, str] | list[str]) -> list[str]:
    """Class index -> label, reading a nameless 80-class model (names "0".."79") as COCO."""
    table = dict(enumerate(names)) if isinstance(names, list) else dict(names)
    labels = [str(table.get(i, i)) for i in range(max(table, default=-1) + 1)]
    if labels and all(lb == str(i) for i, lb in enumerate(labels)):
        if len(labels) == len(COCO80):
            return list(COCO80)
        raise ModelLoadError(
            f"the model's {len(labels)} classes have no names; captionkit needs named classes "
            "(or 80 unnamed ones, read as COCO)"
        )
    return labels


class UltralyticsDetector(Detector):
    """Any detection model ``ultralytics.YOLO`` loads; its own class names are the labels."""

    name = "ultralytics"

    @classmethod
    def from_options(cls, options: DetectorOptions) -> Detector:
        o = options
        return cls(
            weights=o.weights, device=o.device, conf=o.conf, nms=o.nms,
            max_objects=o.max_objects, threads=o.threads,
        )  # fmt: skip

    def __init__(self, weights: str | None = None, device: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = str(weights) if weights else DEFAULT_MODEL
        if _is_path(self.weights):
            from captionkit.captioners.grounded.weights import local_weights

            # A wrong local path fails now, naming the path, before ultralytics can try to
            # fetch a release asset of the same name.
            self.weights = str(local_weights(self.weights).resolve())
            self._local = True
        else:
            self._local = False
        from captionkit.devices import DEVICE_RE

        if not DEVICE_RE.fullmatch(device):
            raise ConfigError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
        self.device = device
        # Check the dependency at construction so a missing extra fails before any work.
        self._ultralytics = import_ultralytics()

    def _load(self) -> None:
        from captionkit.devices import resolve_device

        if self.threads is not None:
            import torch

            torch.set_num_threads(int(self.threads))
        self._device = resolve_device(self.device, extra="ultralytics", feature="Ultralytics")
        if self._local:
            from ultralytics.utils.checks import check_yolov5u_filename

            renamed = check_yolov5u_filename(self.weights, verbose=False)
            if renamed != self.weights:
                raise ModelLoadError(
                    f"ultralytics would load {Path(renamed).name} instead of {self.weights} "
                    f"(it renames YOLOv5/v3 file names); rename the file to {Path(renamed).name}"
                )
        try:
            self._model = self._ultralytics.YOLO(self.weights)
        except Exception as exc:  # ultralytics raises many types for a bad path or name
            hint = "" if self._local else f"; {WEIGHTS_HINT}"
            raise ModelLoadError(
                f"ultralytics could not load '{self.weights}': {_one_line(exc)}{hint}"
            ) from None
        task = getattr(self._model, "task", "detect")
        if task not in BOX_TASKS:
            raise ModelLoadError(
                f"'{self.weights}' is a {task} model; the detector needs a detect model"
            )
        self.labels = coco_labels(self._model.names)

    def _raw_batch(
        self, images: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Ultralytics reads numpy arrays as BGR; it runs its own NMS, ours then caps and clips.
        bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
        results = self._model.predict(
            bgr,
            conf=self.conf,
            iou=self.nms,
            max_det=self.max_objects,
            device=self._device,
            verbose=False,
        )
        out = []
        for r in results:
            b = r.boxes
            if b is None or len(b) == 0:  # nothing found (e.g. untrained weights)
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)))
                continue
            out.append((b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy()))
        return out
