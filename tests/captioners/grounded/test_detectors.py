"""Detectors: label maps, shared post-processing, and real weights on real photos."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from captionkit.captioners.grounded import detectors_yolox, weights
from captionkit.captioners.grounded.detectors import COCO80, Detection, finalize, load_detector
from captionkit.captioners.grounded.detectors_ssd import TF_ID_TO_COCO80
from captionkit.errors import ConfigError, InputError, MissingDependencyError, ModelLoadError

DOG_RUNNING = "1119418776_58e4b93eac.jpg"  # "A black and white dog is running through the field"
DOG_STICK = "1187593464_ce862352c6.jpg"  # "A big tan dog runs on grass with a big stick"
CYCLIST = "1142847777_2a0c1c2551.jpg"  # "A bicyclist riding on a city street"
HORSES = "109202801_c6381eef15.jpg"  # "Two draft horses pull a cart through the snow"


def labels(dets: list[Detection]) -> list[str]:
    return [d.label for d in dets]


# --- label maps and post-processing (no model) -------------------------------------------


def test_tf_label_map_skips_the_unused_coco_ids():
    def name(tf_id: int) -> str | None:
        i = TF_ID_TO_COCO80[tf_id]
        return COCO80[i] if i >= 0 else None

    assert name(0) is None  # background
    assert (name(1), name(18), name(19), name(67), name(90)) == (
        "person", "dog", "horse", "dining table", "toothbrush"
    )  # fmt: skip
    assert name(12) is None and name(13) == "stop sign"
    assert sum(1 for i in TF_ID_TO_COCO80 if i >= 0) == 80


def test_finalize_is_class_aware_clips_and_caps():
    boxes = np.array(
        [[10, 10, 110, 110], [12, 12, 112, 112], [11, 11, 111, 111], [-50, 20, 60, 500]],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([16, 16, 0, 0])  # dog, dog (overlapping), person (same place), person
    dets = finalize(boxes, scores, classes, width=200, height=300, conf=0.5, nms=0.45,
                    max_objects=10)  # fmt: skip
    assert labels(dets) == ["dog", "person", "person"]  # the second dog is suppressed
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    assert dets[-1].box == (0.0, 20.0, 60.0, 300.0)  # clipped to the image
    capped = finalize(boxes, scores, classes, 200, 300, conf=0.5, nms=0.45, max_objects=1)
    assert labels(capped) == ["dog"]
    assert finalize(boxes, scores, classes, 200, 300, conf=0.95, nms=0.45, max_objects=5) == []


def test_finalize_drops_boxes_outside_the_image():
    dets = finalize(np.array([[300, 300, 400, 400]]), np.array([0.9]), np.array([0]), 100, 100,
                    conf=0.1, nms=0.5, max_objects=5)  # fmt: skip
    assert dets == []


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown detector 'detr'"):
        load_detector("detr")
    with pytest.raises(ConfigError, match="thresholds"):
        load_detector("ssd", conf=1.5)
    with pytest.raises(ConfigError, match="max_objects"):
        load_detector("ssd", max_objects=0)


def test_modules_import_no_heavy_libraries():
    code = (
        "import sys, captionkit.captioners.grounded.detectors, "
        "captionkit.captioners.grounded.scene, captionkit.captioners.grounded.ocr; "
        "heavy = [m for m in ('cv2', 'onnxruntime', 'torch', 'ai_edge_litert', "
        "'rapidocr_onnxruntime') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- YOLOX pre/post-processing and weights ------------------------------------------------


def test_letterbox_pads_bottom_right_and_swaps_to_bgr():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red in RGB
    tensor, ratio = detectors_yolox.letterbox(image, 416)
    assert tensor.shape == (3, 416, 416) and ratio == pytest.approx(2.08)
    assert tensor[2, 0, 0] == 255 and tensor[0, 0, 0] == 0  # red lands in the last (R) plane
    assert (tensor[:, 300:, :] == 114).all()  # padding below the resized image


def test_grid_decode_follows_the_yolox_demo():
    raw = np.zeros((3549, 85), dtype=np.float32)
    out = detectors_yolox.grid_decode(raw, 416)
    assert tuple(out[0, :4]) == (0, 0, 8, 8)  # first cell of stride 8: exp(0) * 8
    assert tuple(out[1, :2]) == (8, 0)  # next cell to the right
    assert tuple(out[52 * 52, :4]) == (0, 0, 16, 16)  # first cell of stride 16
    with pytest.raises(ModelLoadError, match="decode_in_inference"):
        detectors_yolox.grid_decode(np.zeros((100, 85), np.float32), 416)


def test_yolox_missing_local_weights_fail_at_construction(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_detector("yolox", weights=str(tmp_path / "nope.onnx"))


def test_yolox_offline_without_weights_names_the_flag(monkeypatch):
    def offline(url, **kwargs):
        raise InputError(f"{url}: ConnectError: no network")

    monkeypatch.setattr("captionkit.http.download", offline)
    detector = load_detector("yolox")  # nothing is fetched until the first use
    with pytest.raises(ModelLoadError, match="--detector-weights PATH") as info:
        detector.detect_batch([np.zeros((32, 32, 3), np.uint8)])
    assert "\n" not in str(info.value)


def test_yolox_download_is_verified_then_cached(monkeypatch, yolox_weights, load_photo):
    data = yolox_weights.read_bytes()
    calls = []

    def fake_download(url, **kwargs):
        calls.append(url)
        return data

    monkeypatch.setattr("captionkit.http.download", fake_download)
    # Wrong bytes for the pinned release hash: rejected, nothing cached.
    with pytest.raises(ModelLoadError, match="sha256"):
        weights.yolox_nano_weights()
    assert not (weights.cache_dir() / "yolox_nano.onnx").exists()
    # Pretend the shared export is the release: it is stored once and then reused.
    monkeypatch.setattr(weights, "YOLOX_NANO_SHA256", hashlib.sha256(data).hexdigest())
    detector = load_detector("yolox")
    assert "dog" in labels(detector.detect(load_photo(DOG_RUNNING)))
    assert weights.yolox_nano_weights().read_bytes() == data
    assert len(calls) == 2


def test_ultralytics_missing_names_the_extra():
    if importlib.util.find_spec("ultralytics") is not None:
        pytest.skip("ultralytics is installed here; this checks the message when it is not")
    with pytest.raises(MissingDependencyError, match=r'pip install "captionkit\[ultralytics\]"'):
        load_detector("ultralytics")


# --- real weights on real photos ----------------------------------------------------------


@pytest.mark.parametrize("which", ["ssd_detector", "yolox_detector"])
def test_detectors_name_dogs_people_and_horses(which, request, load_photo):
    detector = request.getfixturevalue(which)
    names = [DOG_RUNNING, DOG_STICK, CYCLIST, HORSES]
    images = [load_photo(n) for n in names]
    batch = detector.detect_batch(images)
    assert len(batch) == 4
    assert labels(batch[0])[:1] == ["dog"] and labels(batch[1])[:1] == ["dog"]
    assert {"person", "bicycle"} <= set(labels(batch[2]))
    assert labels(batch[3]).count("horse") == 2
    for image, dets in zip(images, batch, strict=True):
        h, w = image.shape[:2]
        for d in dets:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert detector.conf <= d.score <= 1
    # The dog box sits where the dog is (checked by eye once; centre of a 500x375 frame).
    x1, y1, x2, y2 = batch[0][0].box
    assert 150 < (x1 + x2) / 2 < 290 and 50 < (y1 + y2) / 2 < 280
    # A batch gives the same answer as one image at a time.
    single = detector.detect(images[2])
    assert labels(single) == labels(batch[2])
    assert np.allclose(single[0].box, batch[2][0].box, atol=2.0)


def test_ssd_accepts_grey_and_rgba_and_empty(ssd_detector, load_photo):
    rgb = load_photo(DOG_STICK)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    assert labels(ssd_detector.detect(rgba))[:1] == ["dog"]
    assert isinstance(ssd_detector.detect(rgb.mean(axis=2).astype(np.uint8)), list)
    assert ssd_detector.detect_batch([]) == []
    assert ssd_detector.detect(np.zeros((64, 64, 3), np.uint8)) == []
