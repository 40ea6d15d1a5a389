"""The Ultralytics detector with the real package, run in a side environment (issue #12 item 10).

ultralytics needs torchvision, which does not import beside the main environment's CPU torch,
so these tests run a separate Python where it does: build one with
``scripts/ultralytics_env.sh`` and point ``CAPTIONKIT_ULTRALYTICS_PYTHON`` at its interpreter:

    bash scripts/ultralytics_env.sh /work/ultra-venv
    CAPTIONKIT_ULTRALYTICS_PYTHON=/work/ultra-venv/bin/python \\
        python -m pytest -m slow tests/captioners/grounded/test_ultralytics_slow.py

The model is a YOLOv8n built from its yaml (random weights, no download), saved to a .pt the
detector loads through ``detector_weights``. This checkout's ``src`` goes first on the side
interpreter's path, so the code under test is this tree's whatever the side env installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from captionkit.captioners.grounded.detectors import COCO80
from helpers.fakes import write_image

pytestmark = pytest.mark.slow

ENV_VAR = "CAPTIONKIT_ULTRALYTICS_PYTHON"
REPO = Path(__file__).resolve().parents[3]
PHOTOS = REPO / ".." / "shared" / "data" / "flickr8k-dev" / "images"
NAMES = ("1042020065_fb3d3ba5ba.jpg", "1002674143_1b742ab4b8.jpg")


@pytest.fixture(scope="module")
def side_python() -> str:
    python = os.environ.get(ENV_VAR, "")
    if not python:
        pytest.skip(f"set {ENV_VAR} to a Python with ultralytics (scripts/ultralytics_env.sh)")
    if not os.access(python, os.X_OK):
        pytest.skip(f"{ENV_VAR}={python} is not an executable Python")
    return python


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ultralytics")


def run(python: str, workdir: Path, *args: str, timeout: int = 300):
    """Run the side interpreter with this checkout's src first and ultralytics kept offline
    and inside ``workdir`` (its settings file, any stray download)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    env["YOLO_CONFIG_DIR"] = str(workdir / "ultralytics-config")
    return subprocess.run(
        [python, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir
    )


@pytest.fixture(scope="module")
def random_weights(side_python, workdir) -> Path:
    """A YOLOv8n with random weights, built from the yaml ultralytics ships."""
    target = workdir / "yolov8n-random.pt"
    code = (
        "import sys, ultralytics; m = ultralytics.YOLO('yolov8n.yaml'); m.save(sys.argv[1]); "
        "print(ultralytics.__version__)"
    )
    proc = run(side_python, workdir, "-c", code, str(target))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert target.is_file() and target.stat().st_size > 1_000_000
    return target


@pytest.fixture(scope="module")
def photos(workdir) -> Path:
    """Two shared photos when ../shared is there, else two generated images."""
    folder = workdir / "photos"
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(NAMES):
        source = PHOTOS / name
        if source.is_file():
            (folder / name).write_bytes(source.read_bytes())
        else:
            write_image(folder / f"generated_{i}.jpg", ("red", "blue")[i], size=(320, 240))
    return folder


#: Runs in the side env: detect with the random model, recording any download ultralytics
#: attempts (there must be none with a local file).
DETECT = """
import json, sys
import numpy as np
from PIL import Image
import ultralytics.utils.downloads as dl

attempts = []
def no_download(*args, **kwargs):
    attempts.append(str(kwargs.get("url") or args[:1]))
    raise ConnectionError("download attempted")
dl.safe_download = no_download

from captionkit.captioners.grounded.detectors import load_detector

weights, folder = sys.argv[1], sys.argv[2]
from pathlib import Path
images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(folder).glob("*.jpg"))]
out = {"attempts": attempts}
for conf in (0.0, 0.3):
    det = load_detector("ultralytics", weights, conf=conf, max_objects=5, device="cpu", threads=2)
    batch = det.detect_batch(images)
    out[str(conf)] = [[(d.label, d.score, d.box) for d in dets] for dets in batch]
out["sizes"] = [im.shape[:2] for im in images]
print(json.dumps(out))
"""


def test_detector_maps_classes_to_coco_and_never_downloads(side_python, workdir, random_weights,
                                                           photos):  # fmt: skip
    proc = run(side_python, workdir, "-c", DETECT, str(random_weights), str(photos))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []
    everything = out["0.0"]
    assert len(everything) == 2 and all(everything), "conf=0 keeps even random boxes"
    for dets, (h, w) in zip(everything, out["sizes"], strict=True):
        assert len(dets) <= 5
        for label, score, (x1, y1, x2, y2) in dets:
            assert label in COCO80  # not "0".."79": a nameless model reads as COCO
            assert 0 <= score <= 1 and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert out["0.3"] == [[], []]  # random weights find nothing at a real threshold


def caption_cli(side_python, workdir, *args: str):
    return run(
        side_python, workdir, "-m", "captionkit.cli.main", "caption", *args,
        "--format", "jsonl", "--store", "none", "--no-sidecar",
    )  # fmt: skip


@pytest.mark.parametrize("style", ["short", "detailed"])
def test_pipeline_through_the_cli_captions_what_finds_nothing(
    side_python, workdir, random_weights, photos, style
):
    proc = caption_cli(
        side_python, workdir, str(photos), "-o", "detector=ultralytics",
        "-o", f"detector_weights={random_weights}", "--style", style, "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 2
    for row in rows:
        assert row["error"] is None and row["text"]
        assert row["model"] == "grounded:ultralytics+template"
        assert row["extra"]["facts"]["objects"] == []  # the fallback caption still comes


def test_pipeline_with_every_box_kept_names_coco_classes(
    side_python, workdir, random_weights, photos
):
    proc = caption_cli(
        side_python, workdir, str(photos), "--detector", "ultralytics",
        "--detector-weights", str(random_weights), "-o", "conf=0", "--style", "detailed",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    labels = {o["label"] for row in rows for o in row["extra"]["facts"]["objects"]}
    assert labels and labels <= set(COCO80)
    assert all(row["text"] for row in rows)


def test_missing_local_weights_is_one_line_and_downloads_nothing(side_python, workdir, photos):
    missing = workdir / "nowhere" / "yolov8n.pt"
    proc = caption_cli(
        side_python, workdir, str(photos), "-o", "detector=ultralytics",
        "-o", f"detector_weights={missing}",
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"captionkit: error: detector weights not found: {missing}"
    ]
    assert not (workdir / "yolov8n.pt").exists()
