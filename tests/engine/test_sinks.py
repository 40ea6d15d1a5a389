"""Sidecar files and JSONL/CSV/TXT streams: where finished captions go."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from captionkit.engine.sinks import SidecarSink, StreamSink, atomic_write_text
from captionkit.errors import ConfigError
from captionkit.inputs.sources import Source
from captionkit.types import Candidate, CaptionResult


def src(path: Path, root: Path | None = None) -> Source:
    rel = path.relative_to(root) if root else Path(path.name)
    return Source(key=str(path), path=path, rel=rel)


def ok(source: Source | str, text: str = "a red image") -> CaptionResult:
    key = source.key if isinstance(source, Source) else source
    return CaptionResult(
        source=key,
        text=text,
        candidates=[Candidate(text, 0.9), Candidate("other", 0.1)],
        backend="fake",
        model="fake-model",
        style="short",
        seconds=0.5,
    )


def failed(key: str) -> CaptionResult:
    return CaptionResult(source=key, text=None, error="corrupt image: truncated", backend="fake")


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


# -- sidecars ------------------------------------------------------------------------------


def test_sidecar_beside_the_image(photo_dir):
    sink = SidecarSink()
    source = src(photo_dir / "red.jpg")
    assert not sink.already_done(source)
    sink.write(ok(source), source)
    sink.close()
    assert (photo_dir / "red.txt").read_text() == "a red image\n"
    assert sink.already_done(source)
    assert temp_files(photo_dir) == []


def test_sidecar_mirrored_under_output_dir(photo_dir, tmp_path):
    out = tmp_path / "captions"
    sink = SidecarSink(output_dir=out)
    source = src(photo_dir / "sub" / "green.jpg", root=photo_dir)
    sink.write(ok(source, "green"), source)
    assert (out / "sub" / "green.txt").read_text() == "green\n"
    assert not (photo_dir / "sub" / "green.txt").exists()
    assert sink.path_for(source) == out / "sub" / "green.txt"


@pytest.mark.parametrize("ext", [".caption", "caption"])
def test_extension_option(photo_dir, ext):
    sink = SidecarSink(extension=ext)
    source = src(photo_dir / "blue.png")
    sink.write(ok(source), source)
    assert (photo_dir / "blue.caption").read_text() == "a red image\n"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", "old words\n"),
        ("overwrite", "new words\n"),
        ("append", "old words new words\n"),
        ("prepend", "new words old words\n"),
    ],
)
def test_existing_policies(photo_dir, policy, expected):
    (photo_dir / "red.txt").write_text("old words\n")
    sink = SidecarSink(existing=policy)
    source = src(photo_dir / "red.jpg")
    assert sink.already_done(source) is (policy == "skip")
    sink.write(ok(source, "new words"), source)
    assert (photo_dir / "red.txt").read_text() == expected
    assert temp_files(photo_dir) == []


def test_append_to_an_empty_sidecar_has_no_leading_separator(photo_dir):
    (photo_dir / "red.txt").write_text("\n")
    sink = SidecarSink(existing="append", separator=", ")
    source = src(photo_dir / "red.jpg")
    sink.write(ok(source, "new"), source)
    assert (photo_dir / "red.txt").read_text() == "new\n"


def test_failed_results_and_urls_write_no_sidecar(photo_dir):
    sink = SidecarSink()
    source = src(photo_dir / "red.jpg")
    sink.write(failed(source.key), source)
    assert not (photo_dir / "red.txt").exists()
    url = Source(key="http://h/x.jpg", url="http://h/x.jpg")
    assert sink.path_for(url) is None
    assert not sink.already_done(url)
    sink.write(ok(url), url)  # nothing to write, no error


def test_unknown_existing_policy(tmp_path):
    with pytest.raises(ConfigError, match="--existing"):
        SidecarSink(existing="merge")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old\n")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("captionkit.engine.sinks.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # temp file removed


def test_atomic_write_creates_folders(tmp_path):
    target = tmp_path / "x" / "y" / "z.txt"
    atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert [p.name for p in target.parent.iterdir()] == ["z.txt"]


# -- streams -------------------------------------------------------------------------------


def test_jsonl_to_file_with_failures_carrying_error(tmp_path):
    out = tmp_path / "out" / "captions.jsonl"
    sink = StreamSink("jsonl", out)
    sink.write(ok("a.jpg", "un café"), Source(key="a.jpg"))
    sink.flush()
    assert out.read_text(encoding="utf-8").count("\n") == 1  # visible after a flush
    sink.write(failed("b.jpg"), Source(key="b.jpg"))
    sink.close()
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in rows] == ["a.jpg", "b.jpg"]
    assert rows[0]["text"] == "un café" and rows[0]["error"] is None
    assert rows[0]["candidates"][1] == {"text": "other", "score": 0.1}
    assert rows[1]["text"] is None and rows[1]["error"] == "corrupt image: truncated"
    assert "un café" in out.read_text(encoding="utf-8")  # not \\u-escaped
    assert CaptionResult.from_dict(rows[0]).candidates[0].text == "un café"


def test_stream_file_is_rewritten_not_appended(tmp_path):
    out = tmp_path / "c.txt"
    out.write_text("stale line\n")
    sink = StreamSink("txt", out)
    sink.write(ok("a.jpg"), Source(key="a.jpg"))
    sink.close()
    assert out.read_text() == "a.jpg\ta red image\n"


def test_csv_to_file(tmp_path):
    out = tmp_path / "c.csv"
    sink = StreamSink("csv", out)
    sink.write(ok("a, b.jpg", 'says "hi", twice'), Source(key="a, b.jpg"))
    sink.write(failed("c.jpg"), Source(key="c.jpg"))
    sink.close()
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source"] for r in rows] == ["a, b.jpg", "c.jpg"]
    assert rows[0]["caption"] == 'says "hi", twice'
    assert json.loads(rows[0]["candidates"]) == ['says "hi", twice', "other"]
    assert rows[0]["seconds"] == "0.500"
    assert rows[1]["caption"] == "" and rows[1]["error"] == "corrupt image: truncated"
    assert tuple(rows[0]) == StreamSink.CSV_FIELDS


def test_txt_to_stdout_skips_failures(capsys):
    sink = StreamSink("txt")
    sink.write(ok("a.jpg"), Source(key="a.jpg"))
    sink.write(failed("b.jpg"), Source(key="b.jpg"))
    sink.close()
    assert capsys.readouterr().out == "a.jpg\ta red image\n"
    print("stdout still open")  # close() must not close sys.stdout
    assert capsys.readouterr().out == "stdout still open\n"


@pytest.mark.parametrize("output", [None, "-"])
def test_jsonl_to_stdout(capsys, output):
    sink = StreamSink("jsonl", output)
    sink.write(ok("a.jpg"), Source(key="a.jpg"))
    sink.write(failed("b.jpg"), Source(key="b.jpg"))
    sink.close()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["a.jpg", "b.jpg"]
    assert json.loads(lines[1])["error"] == "corrupt image: truncated"


def test_csv_to_stdout(capsys):
    sink = StreamSink("csv", "-")
    sink.write(ok("a.jpg"), Source(key="a.jpg"))
    sink.close()
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == list(StreamSink.CSV_FIELDS)
    assert rows[1][:2] == ["a.jpg", "a red image"]


def test_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="--format"):
        StreamSink("parquet", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# -- several captions per image: --captions-layout ------------------------------------------


def three(source: Source) -> CaptionResult:
    result = ok(source, "a red image")
    result.candidates = [Candidate("a red image"), Candidate("red square"), Candidate("red\nfill")]
    return result


def test_lines_layout_writes_n_lines_in_one_sidecar(tmp_path):
    s = src(tmp_path / "a.jpg")
    sink = SidecarSink(layout="lines", count=3)
    assert sink.targets(s) == [tmp_path / "a.txt"]
    sink.write(three(s), s)
    # one caption per line (a caption's own line break folded): kohya / OneTrainer pick a line
    assert (tmp_path / "a.txt").read_text() == "a red image\nred square\nred fill\n"
    assert sink.already_done(s)
    two = SidecarSink(layout="lines", count=2)  # -n 2 writes two lines
    b = src(tmp_path / "b.jpg")
    two.write(three(b), b)
    assert (tmp_path / "b.txt").read_text() == "a red image\nred square\n"


def test_lines_layout_appends_line_by_line(tmp_path):
    s = src(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("old caption\n")
    SidecarSink(layout="lines", count=2, existing="append").write(three(s), s)
    assert (tmp_path / "a.txt").read_text() == "old caption\na red image\nred square\n"
    SidecarSink(layout="lines", count=2, existing="append").write(three(s), s)  # a rerun
    assert (tmp_path / "a.txt").read_text() == "old caption\na red image\nred square\n"


def test_numbered_layout_writes_one_file_per_caption(tmp_path):
    s = src(tmp_path / "a.jpg")
    sink = SidecarSink(layout="numbered", count=3)
    assert [p.name for p in sink.targets(s)] == ["a.txt", "a.1.txt", "a.2.txt"]
    assert not sink.already_done(s)
    sink.write(three(s), s)
    texts = [(tmp_path / n).read_text() for n in ("a.txt", "a.1.txt", "a.2.txt")]
    assert texts == ["a red image\n", "red square\n", "red\nfill\n"]
    assert sink.already_done(s)


def test_numbered_layout_resumes_a_half_written_image(tmp_path):
    """Killed between IMAGE.txt and IMAGE.1.txt: the image is not done; the rerun writes the
    missing file and (skip) leaves the one already there alone."""
    s = src(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("kept\n")
    sink = SidecarSink(layout="numbered", count=2)
    assert not sink.already_done(s)
    sink.write(three(s), s)
    assert (tmp_path / "a.txt").read_text() == "kept\n"
    assert (tmp_path / "a.1.txt").read_text() == "red square\n"
    assert sink.already_done(s)
    SidecarSink(layout="numbered", count=2, existing="overwrite").write(three(s), s)
    assert (tmp_path / "a.txt").read_text() == "a red image\n"


def test_fewer_candidates_than_asked_write_what_there_is(tmp_path):
    s = src(tmp_path / "a.jpg")
    one = ok(s, "only")
    one.candidates = [Candidate("only")]
    SidecarSink(layout="numbered", count=3).write(one, s)
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["a.txt"]


def test_first_layout_is_the_default_and_a_bad_layout_is_one_line(tmp_path):
    s = src(tmp_path / "a.jpg")
    SidecarSink(count=3).write(three(s), s)
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "a red image\n"
    with pytest.raises(ConfigError, match="--captions-layout must be one of first, lines"):
        SidecarSink(layout="files")
