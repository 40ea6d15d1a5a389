"""The Ultralytics detector in the main environment, where ultralytics is not installed
(issue #12 item 10): the one-line hints a user gets, and the detector's own logic run against
a stand-in ``ultralytics`` module. The real package runs in ``test_ultralytics_slow.py``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captionkit.captioners.grounded.detectors import COCO80, load_detector
from captionkit.captioners.grounded.detectors_ultralytics import coco_labels
from captionkit.errors import ConfigError, ModelLoadError
from helpers.fakes import write_image

SRC = Path(__file__).resolve().parents[3] / "src"

#: A stand-in for the parts of ultralytics the detector uses (YOLO, predict, results, the
#: yolov5 file-name check); it records every YOLO() and predict() call in ``CALLS``.
FAKE = """
import numpy as np

CALLS = []


class _T:
    def __init__(self, a):
        self.a = np.asarray(a, dtype=np.float32)

    def cpu(self):
        return self

    def numpy(self):
        return self.a


class _Boxes:
    def __init__(self, rows):
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        self.xyxy, self.conf, self.cls = _T(rows[:, :4]), _T(rows[:, 4]), _T(rows[:, 5])

    def __len__(self):
        return len(self.xyxy.a)


class _Result:
    def __init__(self, rows):
        self.boxes = _Boxes(rows)


class YOLO:
    task = "detect"

    def __init__(self, weights):
        CALLS.append(("YOLO", weights))
        self.names = {i: str(i) for i in range(80)}  # a model built from its yaml

    def predict(self, images, **kwargs):
        CALLS.append(("predict", kwargs))
        # one box of class 16 (COCO "dog") on the first image, nothing on the others
        return [_Result([[5, 5, 20, 15, 0.9, 16]] if i == 0 else []) for i in range(len(images))]
"""


@pytest.fixture
def fake_ultralytics(tmp_path, monkeypatch):
    """Put the stand-in package first on sys.path (and on PYTHONPATH for subprocesses)."""
    pkg = tmp_path / "site" / "ultralytics"
    (pkg / "utils").mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE)
    (pkg / "utils" / "__init__.py").write_text("")
    (pkg / "utils" / "checks.py").write_text(
        "def check_yolov5u_filename(file, verbose=True):\n"
        "    return file.replace('yolov5n.pt', 'yolov5nu.pt')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "ultralytics" or m.startswith("ultralytics.")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path / "site"


def captionkit(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(SRC)])
    return subprocess.run(
        [sys.executable, "-m", "captionkit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_without_the_package_gives_the_one_line_install_hint(tmp_path):
    if importlib.util.find_spec("ultralytics") is not None:
        pytest.skip("ultralytics is installed here; this checks the hint when it is not")
    image = write_image(tmp_path / "a.jpg")
    proc = captionkit(
        "caption", str(image), "-o", "detector=ultralytics", "--store", "none", "--no-sidecar"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "captionkit: error: 'ultralytics' is needed for the 'ultralytics' detector but is not "
        'installed: pip install "captionkit[ultralytics]"'
    ]
    assert not (tmp_path / "a.txt").exists()


def test_a_broken_install_is_one_line_too(tmp_path):
    """ultralytics beside a torchvision built for another torch fails on import with a
    RuntimeError, not an ImportError; that used to escape as a traceback."""
    site = tmp_path / "site" / "ultralytics"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    image = write_image(tmp_path / "a.jpg")
    proc = captionkit(
        "caption", str(image), "-o", "detector=ultralytics", "--store", "none", "--no-sidecar",
        pythonpath=tmp_path / "site",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "captionkit: error: ultralytics is installed but does not import (operator "
        "torchvision::nms does not exist); install a torch and a torchvision built for each "
        "other"
    ]


def test_missing_local_weights_fail_before_ultralytics_is_asked(fake_ultralytics):
    """Ultralytics downloads any missing file named like a release asset, even under a
    folder the user named; captionkit must refuse first."""
    with pytest.raises(ModelLoadError, match=r"detector weights not found: .*yolov8n\.pt$"):
        load_detector("ultralytics", "/no/such/dir/yolov8n.pt")
    import ultralytics

    assert ultralytics.CALLS == []


def test_yolov5_file_names_ultralytics_would_swap_are_refused(fake_ultralytics, tmp_path):
    weights = tmp_path / "yolov5n.pt"
    weights.write_bytes(b"x")
    detector = load_detector("ultralytics", str(weights))
    with pytest.raises(ModelLoadError, match=r"rename the file to yolov5nu\.pt"):
        detector.load()


def test_nameless_80_class_model_reads_as_coco_and_empty_results_are_fine(
    fake_ultralytics, tmp_path
):
    weights = tmp_path / "random.pt"
    weights.write_bytes(b"x")
    detector = load_detector(
        "ultralytics", str(weights), conf=0.25, max_objects=7, device="cpu", threads=1
    )
    images = [np.zeros((30, 40, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)]
    found = detector.detect_batch(images)
    assert [[d.label for d in dets] for dets in found] == [["dog"], []]
    import ultralytics

    (_, path), (_, kwargs) = ultralytics.CALLS
    assert path == str(weights.resolve())
    assert kwargs == {"conf": 0.25, "iou": 0.45, "max_det": 7, "device": "cpu", "verbose": False}


def test_whole_pipeline_through_the_cli_with_the_stand_in(fake_ultralytics, tmp_path):
    weights = tmp_path / "random.pt"
    weights.write_bytes(b"x")
    image = write_image(tmp_path / "photos" / "a.jpg", "white", size=(40, 30))
    proc = captionkit(
        "caption", str(image), "-o", "detector=ultralytics", "--detector-weights", str(weights),
        "--device", "cpu", "--format", "jsonl", "--store", "none", "--no-sidecar",
        pythonpath=fake_ultralytics,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"model": "grounded:ultralytics+template"' in proc.stdout
    assert "dog" in proc.stdout.split('"candidates"')[0]  # the caption names the COCO class


def test_unknown_device_is_a_config_error(fake_ultralytics, tmp_path):
    weights = tmp_path / "random.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        load_detector("ultralytics", str(weights), device="gpu0")


def test_coco_labels():
    assert coco_labels({i: str(i) for i in range(80)}) == list(COCO80)
    assert coco_labels({0: "cat", 1: "hat"}) == ["cat", "hat"]
    assert coco_labels(["cat", "hat"]) == ["cat", "hat"]
    with pytest.raises(ModelLoadError, match="3 classes have no names"):
        coco_labels({0: "0", 1: "1", 2: "2"})
