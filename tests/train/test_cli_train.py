"""The commands end to end: train, --scst continuing from it, caption with the result, clean."""

from __future__ import annotations

import json

import pytest
from train_helpers import flickr, make_subset
from typer.testing import CliRunner

from captionkit.cli.main import app
from captionkit.errors import ConfigError


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_train_then_scst_then_caption(tmp_path, tiny_encoder, tiny_decoder):
    data = make_subset(tmp_path / "data", 10, per_image=2)
    out = tmp_path / "runs" / "x"
    runner = CliRunner()
    common = ["--batch-size", "8", "--cpu", "--precision", "fp32", "--max-length", "16"]
    text = _ok(
        runner.invoke(
            app,
            [
                "train",
                "--encoder",
                str(tiny_encoder),
                "--decoder",
                str(tiny_decoder),
                "--data",
                str(data),
                "--freeze",
                "encoder",
                "--epochs",
                "2",
                "--output",
                str(out),
                "--lr",
                "3e-3",
                "--val-split",
                "0.2",
                "--decoding",
                "beam",
                "--num-beams",
                "2",
                *common,
            ],
        )
    )
    assert "trainable parameters:" in text and "frozen: encoder" in text
    assert "best val CIDEr-D" in text
    assert (out / "checkpoints").is_dir() and (out / "metrics.csv").is_file()
    saved = json.loads((out / "captionkit_train.json").read_text())
    assert saved["freeze"] == ["encoder"] and saved["epochs"] == 2
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["num_beams"] == 2 and generation["max_new_tokens"] == 16

    text = _ok(
        runner.invoke(
            app,
            [
                "train",
                "--scst",
                "--output",
                str(out),
                "--epochs",
                "1",
                "--scst-samples",
                "2",
                *common,
            ],
        )
    )
    scst = out / "scst"
    assert f"hf:{scst}" in text and (scst / "config.json").is_file()
    rows = (scst / "metrics.csv").read_text()
    assert "reward" in rows.splitlines()[0]

    # resuming a finished run with more epochs continues from its last checkpoint
    text = _ok(runner.invoke(app, ["train", "--output", str(out), "--resume", "--epochs", "3"]))
    assert "resuming from" in text and "step 4" in text

    pytest.importorskip("captionkit.captioners.hf")
    image = next((data / "images").iterdir())
    text = _ok(
        runner.invoke(
            app,
            [
                "caption",
                str(image),
                "--model",
                f"hf:{scst}",
                "--store",
                str(tmp_path / "s.db"),
                "--no-sidecar",
                "--format",
                "jsonl",
                "--no-progress",
            ],
        )
    )
    record = json.loads(next(line for line in text.splitlines() if line.startswith("{")))
    assert record["error"] is None and record["text"], record


def test_train_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--output", str(tmp_path / "o"), "--data", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "--encoder" in str(result.exception)
    result = runner.invoke(app, ["train", "--scst", "--output", str(tmp_path / "none")])
    assert isinstance(result.exception, ConfigError) and "--scst needs" in str(result.exception)
    result = runner.invoke(app, ["train", "--output", str(tmp_path / "none"), "--resume"])
    assert isinstance(result.exception, ConfigError) and "nothing to resume" in str(
        result.exception
    )


def test_data_clean_dry_run_on_the_sample(tmp_path):
    root = flickr()
    report = tmp_path / "report.csv"
    text = _ok(CliRunner().invoke(app, ["data", "clean", str(root), "--report", str(report)]))
    assert "dry run" in text and report.is_file()
    assert "750 captions" in text or "captions checked" in text
