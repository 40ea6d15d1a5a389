"""Evaluation runs and the report formats (HTML, Markdown, JSON, terminal table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captionkit.errors import ConfigError
from captionkit.eval.datasets import load_dataset
from captionkit.eval.evaluate import evaluate
from captionkit.eval.report import render_table, to_json, write_report

FAST = ("bleu", "rouge", "cider", "chair", "stats")


@pytest.fixture
def report(tiny_dataset: Path):
    ds = load_dataset(tiny_dataset)
    good = {it.key: it.references[0] for it in ds.items}
    const = dict.fromkeys(good, "a dog with a frisbee")
    return evaluate(ds, {"good": good, "constant": const}, metrics=FAST, bootstrap_samples=200)


def test_evaluate_scores_every_system(report) -> None:
    names = [s.name for s in report.systems]
    assert names == ["good", "constant"]
    good, const = report.systems
    assert good.summary()["CIDEr-D"] > const.summary()["CIDEr-D"]
    assert const.chair.chair_s > 0 and "frisbee" in dict(const.chair.most_hallucinated)
    assert set(report.intervals) == {"good", "constant"}
    assert report.differences[0].a == "good" and report.differences[0].diff > 0


def test_html_report(report, tmp_path: Path) -> None:
    path = write_report(report, tmp_path / "r.html", examples=3)
    html = path.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2  # metric bars + length histograms
    assert html.count("data:image/jpeg;base64,") == 3  # examples grid thumbnails
    assert "CIDEr-D" in html and "Is the difference real?" in html and "frisbee" in html


def test_markdown_and_json_reports(report, tmp_path: Path) -> None:
    md = write_report(report, tmp_path / "r.md", examples=2).read_text(encoding="utf-8")
    assert "| good |" in md and "(r_files/metrics.png)" in md
    assert (tmp_path / "r_files" / "metrics.png").stat().st_size > 1000
    data = json.loads(write_report(report, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["systems"][0]["metrics"]["CIDEr-D"] == pytest.approx(
        report.systems[0].summary()["CIDEr-D"]
    )
    assert "caption" in data["systems"][1]["per_image"]["a.jpg"]
    assert to_json(report)["cider_d_differences"][0]["a"] == "good"
    with pytest.raises(ConfigError):
        write_report(report, tmp_path / "r.pdf")


def test_terminal_table(report) -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_table(report))
    text = console.export_text()
    assert "good" in text and "CIDEr-D" in text and "[" in text  # interval shown


def test_unknown_metric_and_empty_system(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset)
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate(ds, {"x": {"a.jpg": "a dog"}}, metrics=("bleu", "nope"))
    with pytest.raises(ConfigError, match="no caption"):
        evaluate(ds, {"x": {"zzz.jpg": "a dog"}}, metrics=FAST)
    with pytest.raises(ConfigError, match="clip"):
        evaluate(ds, {"x": {"a.jpg": "a dog"}}, metrics=("clipscore",))
