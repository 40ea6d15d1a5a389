"""Training-ready exports, each read back by the library that consumes it."""

from __future__ import annotations

import json

import pytest

from captionkit.engine.exports import (
    Exporter,
    ExportSink,
    coco_image_id,
    export_rows,
    result_row,
)
from captionkit.errors import ConfigError, OutputError
from captionkit.inputs.sources import Source
from captionkit.types import Candidate, CaptionResult
from helpers.fakes import write_image


def _rows(tmp_path, n=3, with_failure=True):
    rows = []
    for i, colour in enumerate(["red", "green", "blue", "white", "yellow"][:n]):
        path = write_image(tmp_path / "imgs" / f"COCO_val2014_{i + 1:012d}.jpg", colour)
        result = CaptionResult(
            source=str(path),
            text=f"a {colour} image",
            candidates=[Candidate(f"a {colour} image", 0.9), Candidate("other", None)],
            backend="fake",
            model="fake-model",
            style="short",
            sha256=f"{i:064x}",
            path=str(path),
        )
        rows.append(result_row(result, settings='{"style": "short"}'))
    if with_failure:
        bad = CaptionResult(source="bad.jpg", text=None, error="cannot decode", path="bad.jpg")
        rows.append(result_row(bad))
    return rows


def test_parquet_export_reads_back_with_pyarrow_including_failures(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="needs the ray extra (pyarrow)")
    out = tmp_path / "out" / "captions.parquet"
    export_rows("parquet", out, _rows(tmp_path))
    table = pq.read_table(out)
    assert table.num_rows == 4
    data = table.to_pylist()
    assert data[0]["caption"] == "a red image"
    assert data[0]["candidates"] == [
        {"text": "a red image", "score": 0.9},
        {"text": "other", "score": None},
    ]
    assert data[3]["caption"] is None and data[3]["error"] == "cannot decode"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_imagefolder_export_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets", reason="needs the datasets package")
    out = tmp_path / "folder"
    exporter = export_rows("imagefolder", out, _rows(tmp_path))
    assert exporter.written == 3 and exporter.skipped == 0  # the failure is not exported
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert len(ds) == 3
    assert sorted(ds["text"]) == ["a blue image", "a green image", "a red image"]
    assert ds[0]["image"].size == (32, 24)


def test_imagefolder_export_names_never_collide(tmp_path):
    a = write_image(tmp_path / "a" / "x.jpg", "red")
    b = write_image(tmp_path / "b" / "x.jpg", "blue")
    rows = [
        result_row(CaptionResult(source=str(p), text=t, path=str(p)))
        for p, t in ((a, "one"), (b, "two"))
    ]
    export_rows("imagefolder", tmp_path / "out", rows)
    lines = (tmp_path / "out" / "train" / "metadata.jsonl").read_text().splitlines()
    names = [json.loads(line)["file_name"] for line in lines]
    assert names == ["x.jpg", "x-1.jpg"]
    assert all((tmp_path / "out" / "train" / n).is_file() for n in names)


def test_webdataset_export_loads_with_webdataset(tmp_path):
    wds = pytest.importorskip("webdataset", reason="needs the webdataset package")
    out = tmp_path / "wds"
    export_rows("webdataset", out, _rows(tmp_path))
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert len(shards) == 1
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert len(samples) == 3
    first = samples[0]
    assert first["txt"] == "a red image"
    assert first["json"]["sha256"] == f"{0:064x}"
    assert first["jpg"].size == (32, 24)


def test_webdataset_export_skips_images_that_are_not_local_files(tmp_path):
    rows = [result_row(CaptionResult(source="https://x/y.jpg", text="t"))]
    exporter = export_rows("webdataset", tmp_path / "wds", rows)
    assert (exporter.written, exporter.skipped) == (0, 1)


def test_kohya_export_is_keyed_by_absolute_path(tmp_path):
    out = tmp_path / "meta.json"
    rows = _rows(tmp_path, n=2)
    export_rows("kohya", out, rows)
    data = json.loads(out.read_text())
    assert data == {
        rows[0]["path"]: {"caption": "a red image"},
        rows[1]["path"]: {"caption": "a green image"},
    }


def test_coco_export_uses_the_number_in_coco_file_names(tmp_path):
    out = tmp_path / "results.json"
    export_rows("coco", out, _rows(tmp_path, n=2))
    assert json.loads(out.read_text()) == [
        {"image_id": 1, "caption": "a red image"},
        {"image_id": 2, "caption": "a green image"},
    ]
    assert coco_image_id({"id": "photo.jpg", "path": None}) == "photo.jpg"


def test_a_folder_format_without_output_is_one_line():
    with pytest.raises(ConfigError, match="--format imagefolder needs --output"):
        Exporter("imagefolder", None)
    with pytest.raises(ConfigError, match="must be one of"):
        Exporter("tfrecord", "x")


def test_an_unwritable_target_is_refused_before_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write the webdataset export"):
        Exporter("webdataset", tmp_path / "file").check()


def test_a_failed_export_leaves_no_files(tmp_path):
    out = tmp_path / "meta.json"

    def rows():
        yield from _rows(tmp_path, n=1, with_failure=False)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        export_rows("kohya", out, rows())
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_sink_writes_what_the_engine_hands_it(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="needs the ray extra (pyarrow)")
    sink = ExportSink("parquet", tmp_path / "o.parquet", settings="s")
    sink.check()
    sink.write(CaptionResult(source="a.jpg", text="cap", backend="fake"), Source(key="a.jpg"))
    sink.flush()
    sink.close(complete=False)  # a stopped run still publishes what it made
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert [(r["id"], r["caption"], r["settings"]) for r in rows] == [("a.jpg", "cap", "s")]


def test_caption_format_parquet_on_one_machine(tmp_path):
    """``--format parquet`` (no --ray) through the CLI: the export is a sink of the engine."""
    pq = pytest.importorskip("pyarrow.parquet", reason="needs the ray extra (pyarrow)")
    from typer.testing import CliRunner

    from captionkit.cli.main import app
    from helpers.fakes import registered

    write_image(tmp_path / "imgs" / "a.png", "red")
    write_image(tmp_path / "imgs" / "b.png", "blue")
    out = tmp_path / "all.parquet"
    with registered():
        result = CliRunner().invoke(
            app,
            [
                "caption",
                str(tmp_path / "imgs"),
                "--model",
                "fake",
                "--store",
                "none",
                "--no-sidecar",
                "--format",
                "parquet",
                "--output",
                str(out),
            ],
        )
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["caption"] for r in rows) == ["a blue image", "a red image"]


def test_results_export_writes_every_format_from_the_store(tmp_path):
    from typer.testing import CliRunner

    from captionkit.cli.main import app
    from captionkit.engine.store import ResultStore

    path = write_image(tmp_path / "imgs" / "COCO_val2014_000000000042.jpg", "red")
    store = ResultStore(tmp_path / "s.db")
    store.put_many([("k", CaptionResult(source=str(path), text="a red image", path=str(path)))])
    store.close()
    result = CliRunner().invoke(
        app,
        [
            "results",
            "export",
            "--store",
            str(tmp_path / "s.db"),
            "--format",
            "coco",
            "--output",
            str(tmp_path / "coco.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "coco.json").read_text()) == [
        {"image_id": 42, "caption": "a red image"}
    ]


@pytest.mark.skipif(
    __import__("shutil").which("exiftool") is None, reason="needs exiftool (libimage-exiftool-perl)"
)
def test_export_xmp_writes_sidecars_for_successes_only(tmp_path):
    import subprocess

    from captionkit.engine.exports import export_xmp

    good = write_image(tmp_path / "good.jpg", "red")
    bad = write_image(tmp_path / "bad.jpg", "blue")
    results = [
        CaptionResult(source="g", text="a red image", backend="fake", model="m", path=str(good)),
        CaptionResult(source="b", text=None, error="cannot decode", path=str(bad)),
    ]
    done = export_xmp(results)
    assert done.written == 1 and not (tmp_path / "bad.jpg.xmp").exists()
    out = subprocess.run(
        ["exiftool", "-j", "-XMP-dc:Description", str(tmp_path / "good.jpg.xmp")],
        capture_output=True,
        check=True,
    )
    assert json.loads(out.stdout)[0]["Description"] == "a red image"
