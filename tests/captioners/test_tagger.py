"""The WD-style tagger backend on a tiny ONNX tagger built here (helpers/tiny_tagger.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from captionkit.errors import CaptionkitError, ConfigError, ModelLoadError
from captionkit.types import CaptionRequest
from helpers.tiny_tagger import SPEC, build_tagger, expected_scores, write_tags_csv

pytest.importorskip("onnxruntime")

from captionkit.captioners.tagger import (
    TaggerCaptioner,
    TaggerOptions,
    mcut_threshold,
    prepare_image,
    providers,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
REQUEST = CaptionRequest()


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory) -> Path:
    return build_tagger(tmp_path_factory.mktemp("tagger"))


def make(model: Path | str, **options) -> TaggerCaptioner:
    return TaggerCaptioner(str(model), TaggerOptions(**options))


def tag(captioner: TaggerCaptioner, *images: Image.Image):
    inputs = [captioner.preprocess(im, REQUEST) for im in images]
    return captioner.caption_batch(inputs, REQUEST)


def solid(rgb, size=(32, 32), mode="RGB") -> Image.Image:
    return Image.new(mode, size, rgb)


def test_default_thresholds_rank_tags_and_keep_rating_out_of_text(tagger_dir) -> None:
    (out,) = tag(make(tagger_dir), solid(RED))
    assert out.candidates[0].text == "red dress, ^_^, long hair, smile"
    expect = expected_scores(RED)
    rows = out.extra["tags"]
    assert [r[0] for r in rows] == ["red_dress", "general", "^_^", "long_hair", "smile"]
    for name, score, category in rows:
        assert score == pytest.approx(expect[name], abs=1e-3)
        assert category == ("rating" if name == "general" else "general")
    assert out.extra["ratings"]["general"] == pytest.approx(0.9, abs=1e-3)
    assert set(out.extra["ratings"]) == {"general", "sensitive", "questionable", "explicit"}
    json.dumps(out.extra)  # the store and the JSONL sink write it as it is


def test_thresholds_are_per_category(tagger_dir) -> None:
    (out,) = tag(make(tagger_dir, character_threshold=0.5, general_threshold=0.45), solid(RED))
    assert out.candidates[0].text == "red dress, some character, ^_^"
    assert ["some_character", 0.6, "character"] in out.extra["tags"]
    (green,) = tag(make(tagger_dir), solid(GREEN))
    assert green.candidates[0].text.startswith("hatsune miku, ")


def test_bgr_order_as_the_reference(tagger_dir) -> None:
    captioner = make(tagger_dir)
    red, blue = tag(captioner, solid(RED), solid(BLUE))
    assert "red dress" in red.candidates[0].text and "blue sky" not in red.candidates[0].text
    assert "blue sky" in blue.candidates[0].text and "red dress" not in blue.candidates[0].text


def test_top_k_ignores_thresholds(tagger_dir) -> None:
    (out,) = tag(make(tagger_dir, top_k_tags=2, general_threshold=0.99), solid(RED))
    assert out.candidates[0].text == "red dress, some character"
    (one,) = tag(make(tagger_dir, top_k_tags=1), solid(GREEN))
    assert one.candidates[0].text == "hatsune miku"


def test_mcut_as_the_reference(tagger_dir) -> None:
    import numpy as np

    assert mcut_threshold(np.array([0.9, 0.85, 0.2, 0.1])) == pytest.approx(0.525)
    assert mcut_threshold(np.array([0.4])) == 0.0
    (out,) = tag(make(tagger_dir, mcut=True), solid(RED))
    # general gaps: 0.982 -> 0.5 is the largest; characters 0.6 vs 0.018 -> cut at 0.309
    assert out.candidates[0].text == "red dress, some character"


def test_include_rating(tagger_dir) -> None:
    (out,) = tag(make(tagger_dir, include_rating=True), solid(RED))
    assert out.candidates[0].text == "red dress, general, ^_^, long hair, smile"


def test_batch_equals_one_by_one(tagger_dir) -> None:
    captioner = make(tagger_dir)
    images = [solid(RED), solid(GREEN, (50, 20)), solid(BLUE, (7, 64)), solid((90, 90, 90))]
    batched = tag(captioner, *images)
    single = [tag(captioner, im)[0] for im in images]
    assert [o.candidates[0].text for o in batched] == [o.candidates[0].text for o in single]
    assert [o.extra for o in batched] == [o.extra for o in single]


def test_fixed_batch_models_are_fed_in_chunks(tagger_dir, tmp_path) -> None:
    fixed = make(build_tagger(tmp_path / "fixed", fixed_batch=2))
    assert fixed.fixed_batch == 2
    images = [solid(RED), solid(GREEN), solid(BLUE)]
    assert [o.extra for o in tag(fixed, *images)] == [
        o.extra for o in tag(make(tagger_dir), *images)
    ]


def test_preprocessing_pads_white_resizes_to_the_onnx_input_and_flips_to_bgr(tmp_path) -> None:
    captioner = make(build_tagger(tmp_path / "m40", size=40))
    assert captioner.size == 40
    arr = captioner.preprocess(solid(RED, (80, 40)), REQUEST)
    assert arr.shape == (40, 40, 3) and str(arr.dtype) == "float32"
    assert arr[20, 20].tolist() == [0.0, 0.0, 255.0]  # BGR
    assert arr[0, 20].tolist() == [255.0, 255.0, 255.0]  # white padding above
    assert arr[39, 20].tolist() == [255.0, 255.0, 255.0]  # and below
    clear = prepare_image(solid((0, 0, 0, 0), (8, 8), "RGBA"), 8)
    assert clear.min() == 255.0  # transparent pixels are white, as in the reference


def test_registry_and_options_validation(tagger_dir) -> None:
    from captionkit.captioners import registry
    from helpers.fakes import registered

    with registered(TaggerCaptioner, "tagger"):
        captioner = registry.create(f"tagger:{tagger_dir}", general_threshold=0.45)
        assert isinstance(captioner, TaggerCaptioner)
        with pytest.raises(ConfigError, match="general_threshold"):
            registry.create(f"tagger:{tagger_dir}", general_threshold=2)


def one_line(exc: pytest.ExceptionInfo[CaptionkitError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_csv_is_one_line(tagger_dir, tmp_path) -> None:
    model = copy_model(tagger_dir, tmp_path / "m")
    (model / "selected_tags.csv").unlink()
    with pytest.raises(ModelLoadError) as exc:
        make(model)
    assert "selected_tags.csv" in one_line(exc)


def test_corrupt_onnx_is_one_line(tagger_dir, tmp_path) -> None:
    model = copy_model(tagger_dir, tmp_path / "m")
    (model / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelLoadError) as exc:
        make(model)
    assert "could not load" in one_line(exc)


def test_wrong_column_is_one_line(tagger_dir, tmp_path) -> None:
    model = copy_model(tagger_dir, tmp_path / "m")
    write_tags_csv(model / "selected_tags.csv", header=("tag_id", "tag", "category", "count"))
    with pytest.raises(ModelLoadError) as exc:
        make(model)
    assert "'name'" in one_line(exc) and "tag_id,name,category,count" in str(exc.value)


def test_bad_category_and_wrong_row_count_are_one_line(tagger_dir, tmp_path) -> None:
    model = copy_model(tagger_dir, tmp_path / "m")
    bad = [(n, "x" if i == 2 else c, w, b) for i, (n, c, w, b) in enumerate(SPEC)]
    write_tags_csv(model / "selected_tags.csv", spec=bad)
    with pytest.raises(ModelLoadError) as exc:
        make(model)
    assert "line 4" in one_line(exc)
    write_tags_csv(model / "selected_tags.csv", spec=SPEC[:-1])
    with pytest.raises(ModelLoadError) as exc:
        make(model)
    assert "another model" in one_line(exc)


def test_missing_folder_and_offline_hub_id_are_one_line(tmp_path) -> None:
    with pytest.raises(ModelLoadError) as exc:
        make(tmp_path / "nowhere")
    assert "no such folder" in one_line(exc)
    pytest.importorskip("huggingface_hub")
    with pytest.raises(ModelLoadError) as exc:  # conftest sets HF_HUB_OFFLINE=1
        make("SmilingWolf/wd-vit-tagger-v3")
    text = one_line(exc)
    assert "SmilingWolf/wd-vit-tagger-v3" in text and "tagger:FOLDER" in text


def test_devices_map_to_onnxruntime_providers() -> None:
    assert providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers("auto", both) == both
    assert providers("cuda:1", both)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="unknown device"):
        providers("tpu", both)


def test_cli_writes_tag_sidecars_and_jsonl(tagger_dir, tmp_path, capsys, monkeypatch) -> None:
    from captionkit.cli.main import run
    from helpers.fakes import registered

    photos = tmp_path / "photos"
    photos.mkdir()
    solid(RED).save(photos / "red.png")
    solid(GREEN, (40, 30)).save(photos / "green.jpg")
    out = tmp_path / "tags.jsonl"
    args = ["caption", str(photos), "-m", f"tagger:{tagger_dir}", "--sidecar", "--store",
            "none", "--no-progress", "--format", "jsonl", "--output", str(out),
            "--general-threshold", "0.45"]  # fmt: skip
    with registered(TaggerCaptioner, "tagger"), pytest.raises(SystemExit) as exc:
        monkeypatch.setattr(sys, "argv", ["captionkit", *args])
        run()
    assert exc.value.code == 0, capsys.readouterr()
    assert (photos / "red.txt").read_text().strip() == "red dress, ^_^"
    assert (photos / "green.txt").read_text().strip().startswith("hatsune miku")
    records = {Path(r["source"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["red.png"]["extra"]["tags"][0][:1] == ["red_dress"]


def test_cli_cuda_without_the_provider_is_one_line(tagger_dir, tmp_path, capsys, monkeypatch):
    import onnxruntime

    from captionkit.cli.main import run
    from helpers.fakes import registered

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    photos = tmp_path / "photos"
    photos.mkdir()
    solid(RED).save(photos / "red.png")
    args = ["caption", str(photos), "-m", f"tagger:{tagger_dir}", "--store", "none",
            "--no-progress", "--device", "cuda"]  # fmt: skip
    capsys.readouterr()
    with registered(TaggerCaptioner, "tagger"), pytest.raises(SystemExit) as exc:
        monkeypatch.setattr(sys, "argv", ["captionkit", *args])
        run()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "cuda" in err.lower(), err
    assert not (photos / "red.txt").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--keep-underscores", "--exclude-tags", "smile"], "red_dress, ^_^, long_hair"),
        (["--tag-sort", "alpha", "--max-tags", "3"], "^_^, long hair, red dress"),
        (["--trigger-word", "sks", "--replace-tags", "red_dress=dress"],
         "sks, dress, ^_^, long hair, smile"),
    ],
)  # fmt: skip
def test_cli_tag_rules_work_on_the_models_names(
    flags, expected, tagger_dir, tmp_path, capsys, monkeypatch
):
    """The run's tag rules reach tagger output through ``extra["tags"]`` (model names and
    scores), so --keep-underscores gets the model's own spelling back."""
    from captionkit.cli.main import run
    from helpers.fakes import registered

    photos = tmp_path / "photos"
    photos.mkdir()
    solid(RED).save(photos / "red.png")
    args = ["caption", str(photos), "-m", f"tagger:{tagger_dir}", "--sidecar", "--store",
            "none", "--no-progress", *flags]  # fmt: skip
    with registered(TaggerCaptioner, "tagger"), pytest.raises(SystemExit) as exc:
        monkeypatch.setattr(sys, "argv", ["captionkit", *args])
        run()
    assert exc.value.code == 0, capsys.readouterr()
    assert (photos / "red.txt").read_text().strip() == expected
