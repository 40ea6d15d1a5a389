"""The Ray cluster driver on a local Ray: inputs, one row per image, resume, failures, exports."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from PIL import Image

from captionkit import session
from captionkit.errors import InputError, ModelLoadError, OutputError
from helpers.fakes import PALETTE, caption_for, write_image

pa = pytest.importorskip("pyarrow", reason='needs the ray extra: pip install "captionkit[ray]"')
pq = pytest.importorskip("pyarrow.parquet", reason="needs the ray extra")
pytest.importorskip("ray", reason='needs the ray extra: pip install "captionkit[ray]"')

COLOURS = ["red", "green", "blue", "white", "yellow", "black"]


def _run(inputs, out, **kw):
    from captionkit.cluster.driver import execute

    kw.setdefault("model", "fake")
    kw.setdefault("ray", "auto")
    kw.setdefault("store", "none")
    run = session.build_run([str(i) for i in inputs], output_dir=str(out), **kw)
    session.check_inputs(run)
    return execute(run)


def _rows(out):
    from captionkit.cluster.output import read_rows

    return list(read_rows(out))


def _png(colour):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), PALETTE[colour]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for i, colour in enumerate(COLOURS):
        write_image(root / f"{i:02d}-{colour}.png", colour)
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def test_a_folder_gives_one_row_per_image_with_failures_recorded(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    outcome = _run([folder], out, actors=2)
    assert (outcome.captioned, outcome.failed, outcome.actors) == (6, 1, 2)
    rows = _rows(out)
    assert len(rows) == 7 and len({r["id"] for r in rows}) == 7
    by_name = {r["id"].rsplit("/", 1)[-1]: r for r in rows}
    red = by_name["00-red.png"]
    assert red["caption"] == caption_for("red") and red["error"] is None
    assert red["sha256"] and len(red["candidates"]) == 2 and red["backend"] == "fake"
    assert json.loads(red["settings"])["style"] == "short"
    assert by_name["broken.jpg"]["caption"] is None and by_name["broken.jpg"]["error"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rows"], manifest["failed"]) == (7, 1)
    assert outcome.exit_code == 1  # a failed image is reported, not fatal


def test_a_rerun_skips_every_caption_and_retries_only_failures(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    _run([folder], out)
    again = _run([folder], out)
    assert (again.captioned, again.failed, again.resumed) == (0, 1, 6)
    rows = _rows(out)
    assert len(rows) == 7 == len({r["id"] for r in rows})  # the old failure row is gone
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rows"], manifest["failed"]) == (7, 1)


def test_a_failure_that_succeeds_on_rerun_replaces_its_row(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    _run([folder], out)
    write_image(folder / "broken.jpg", "green", fmt="JPEG")  # fixed between the runs
    again = _run([folder], out)
    assert (again.captioned, again.failed) == (1, 0)
    rows = {r["id"].rsplit("/", 1)[-1]: r for r in _rows(out)}
    assert len(rows) == 7
    assert rows["broken.jpg"]["caption"] == caption_for("green")
    assert rows["broken.jpg"]["error"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rows"], manifest["failed"]) == (7, 0)


def test_a_resumed_run_captions_only_the_new_images(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    _run([folder], out)
    write_image(folder / "new-1.png", "red")
    write_image(folder / "new-2.png", "blue")
    again = _run([folder], out)
    assert (again.captioned, again.failed, again.resumed) == (2, 1, 6)  # + the retry
    ids = [r["id"] for r in _rows(out)]
    assert len(ids) == 9 == len(set(ids))


def test_other_settings_in_the_same_folder_are_refused(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    _run([folder], out)
    with pytest.raises(OutputError, match=r"other settings.*style"):
        _run([folder], out, style="detailed")


def test_a_parquet_table_carries_its_columns_through(local_ray, tmp_path):
    paths = [str(write_image(tmp_path / f"{c}.png", c)) for c in ("red", "blue")]
    table = tmp_path / "data.parquet"
    pq.write_table(
        pa.table({"url": paths, "license": ["cc-by", "cc0"], "caption": ["old 1", "old 2"]}),
        table,
    )
    out = tmp_path / "out"
    outcome = _run([table], out, image_column="url")
    assert outcome.captioned == 2
    rows = sorted(_rows(out), key=lambda r: r["id"])
    assert [r["caption"] for r in rows] == [caption_for("blue"), caption_for("red")]
    assert [r["license"] for r in rows] == ["cc0", "cc-by"]
    assert [r["input_caption"] for r in rows] == ["old 2", "old 1"]  # not clobbered


def test_a_table_of_image_bytes_resumes_by_content_hash(local_ray, tmp_path):
    table = tmp_path / "bytes.parquet"
    pq.write_table(
        pa.table({"image": [_png("red"), _png("green"), b"junk"], "n": [1, 2, 3]}), table
    )
    out = tmp_path / "out"
    first = _run([table], out)
    assert (first.captioned, first.failed) == (2, 1)
    rows = _rows(out)
    assert all(r["id"].startswith("sha256:") for r in rows)
    assert "image" not in rows[0]  # the bytes are not copied into the output
    again = _run([table], out)
    assert (again.captioned, again.failed) == (0, 1)  # only the junk is tried again
    assert len(_rows(out)) == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_tables(local_ray, tmp_path, fmt):
    paths = [str(write_image(tmp_path / f"{c}.png", c)) for c in ("white", "black")]
    table = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        table.write_text("path,title\n" + "".join(f"{p},t{i}\n" for i, p in enumerate(paths)))
    else:
        table.write_text(
            "".join(json.dumps({"path": p, "title": f"t{i}"}) + "\n" for i, p in enumerate(paths))
        )
    out = tmp_path / "out"
    assert _run([table], out).captioned == 2  # the image column found by its usual name
    assert sorted(r["title"] for r in _rows(out)) == ["t0", "t1"]


def test_a_missing_image_column_is_one_line(local_ray, tmp_path):
    table = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x": [1]}), table)
    with pytest.raises(InputError, match=r"no column 'pic'.*--image-column"):
        _run([table], tmp_path / "out", image_column="pic")


def _shard(path, colours):
    with tarfile.open(path, "w") as tar:
        for i, colour in enumerate(colours):
            for name, data in ((f"s{i}.png", _png(colour)), (f"s{i}.txt", b"alt text")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_from_a_brace_pattern(local_ray, tmp_path):
    _shard(tmp_path / "shard-00000.tar", ["red", "blue"])
    _shard(tmp_path / "shard-00001.tar", ["green"])
    out = tmp_path / "out"
    outcome = _run([str(tmp_path / "shard-{00000..00001}.tar")], out)
    assert outcome.captioned == 3
    rows = _rows(out)
    # the same key in two shards is two images
    assert sorted(r["id"] for r in rows) == [
        "shard-00000.tar#s0",
        "shard-00000.tar#s1",
        "shard-00001.tar#s0",
    ]
    assert {r["caption"] for r in rows} == {caption_for(c) for c in ("red", "blue", "green")}


def test_a_hugging_face_dataset_split(local_ray, tmp_path):
    datasets = pytest.importorskip("datasets", reason="needs the datasets package")
    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8), PALETTE[c]) for c in ("red", "yellow")],
            "label": [0, 1],
        },
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    data = tmp_path / "hfdata"
    (data / "data").mkdir(parents=True)
    ds.to_parquet(str(data / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "out"
    outcome = _run([f"hf:{data}"], out, split="train")
    assert outcome.captioned == 2
    assert sorted(r["caption"] for r in _rows(out)) == [caption_for("red"), caption_for("yellow")]


def test_the_export_formats_come_from_the_whole_output(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    _run([folder], out, format="kohya", output=str(tmp_path / "meta.json"))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(meta) == 6 and all(v["caption"].startswith("a ") for v in meta.values())
    _run([folder], out, format="jsonl", output=str(tmp_path / "all.jsonl"))  # a resumed run
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == 7


def test_the_cli_runs_on_a_local_ray(local_ray, folder, tmp_path):
    from typer.testing import CliRunner

    from captionkit.cli.main import app

    out = tmp_path / "out"
    args = [
        "caption",
        str(folder),
        "--model",
        "fake",
        "--ray",
        "auto",
        "--actors",
        "1",
        "--output-dir",
        str(out),
        "--store",
        "none",
        "--format",
        "parquet",
        "--output",
        str(tmp_path / "all.parquet"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # one broken image
    assert "6 captioned" in result.output and "1 failed" in result.output
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 7


def test_a_model_that_cannot_load_is_one_line(local_ray, folder, tmp_path):
    with pytest.raises(ModelLoadError, match="no model folder at"):  # Ray's wrapping undone
        _run([folder], tmp_path / "out", model=f"hf:{tmp_path / 'no-such-model'}")


def test_a_tiny_hf_model_on_ray(local_ray, tiny_vit_gpt2, folder, tmp_path):
    out = tmp_path / "out"
    outcome = _run([folder], out, model=f"hf:{tiny_vit_gpt2}", max_new_tokens=4)
    assert (outcome.captioned, outcome.failed) == (6, 1)
    rows = [r for r in _rows(out) if r["caption"] is not None]
    assert all(r["backend"] == "hf" and isinstance(r["caption"], str) for r in rows)


def test_ids_are_absolute_so_a_rerun_from_another_folder_resumes(
    local_ray, folder, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.chdir(folder.parent)
    _run([folder.name], out)
    monkeypatch.chdir(folder)
    again = _run(["."], out)
    assert (again.captioned, again.resumed) == (0, 6)  # the broken image is retried
    rows = _rows(out)
    assert len(rows) == 7 and all(r["id"].startswith("/") for r in rows)


def test_sidecars_on_request(local_ray, folder, tmp_path):
    _run([folder], tmp_path / "out", sidecar=True)
    assert (folder / "00-red.txt").read_text().strip() == caption_for("red")
    assert not (folder / "broken.txt").exists()


def test_an_unwritable_export_is_refused_before_any_work(local_ray, folder, tmp_path):
    (tmp_path / "meta.json").mkdir()  # a folder where the kohya file should go
    with pytest.raises(OutputError, match="cannot write the kohya export"):
        _run([folder], tmp_path / "out", format="kohya", output=str(tmp_path / "meta.json"))
    assert not (tmp_path / "out" / "shards").exists()
