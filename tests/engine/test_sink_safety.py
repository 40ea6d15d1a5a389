"""Sinks under hostile conditions (issue #11): odd file names, failed runs, unwritable places,
sidecar name collisions, reruns with append/prepend, file modes."""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
from pathlib import Path

import pytest

from captionkit.engine.sinks import SidecarSink, StreamSink, atomic_write_text, check_writable
from captionkit.errors import OutputError
from captionkit.inputs.sources import Source, iter_sources
from captionkit.types import Candidate, CaptionResult
from helpers.fakes import write_image

# 'café.jpg' written in Latin-1: the byte 0xE9 is not UTF-8, so os.fsdecode gives '\udce9'.
LATIN1_NAME = os.fsdecode(b"caf\xe9.jpg")
ROOT = os.geteuid() == 0


def ok(source: Source | str, text: str = "a red image") -> CaptionResult:
    key = source.key if isinstance(source, Source) else source
    return CaptionResult(
        source=key,
        text=text,
        candidates=[Candidate(text, 0.9)],
        backend="fake",
        model="fake-model",
        style="short",
        path=key,
    )


def src(path: Path, root: Path | None = None) -> Source:
    rel = path.relative_to(root) if root else Path(path.name)
    return Source(key=str(path), path=path, rel=rel)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# -- item 1: names that are not UTF-8 -----------------------------------------------------


def test_non_utf8_name_jsonl_roundtrips_to_the_exact_bytes(tmp_path):
    image = write_image(tmp_path / LATIN1_NAME, "red")
    out = tmp_path / "out.jsonl"
    sink = StreamSink("jsonl", out)
    source = src(image)
    sink.write(ok(source, "un café"), source)
    sink.close()
    raw = out.read_bytes()
    raw.decode("utf-8")  # the file stays valid UTF-8
    assert b"\\udce9" in raw and "un café".encode() in raw  # escape only what must be
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert os.fsencode(row["source"]) == os.fsencode(str(image))
    assert Path(row["path"]).exists()


@pytest.mark.parametrize("fmt", ["csv", "txt"])
def test_non_utf8_name_csv_and_txt_carry_the_original_bytes(tmp_path, fmt):
    image = write_image(tmp_path / LATIN1_NAME, "red")
    out = tmp_path / f"out.{fmt}"
    sink = StreamSink(fmt, out)
    sink.write(ok(src(image)), src(image))
    sink.close()
    assert os.fsencode(str(image)) in out.read_bytes()  # the name's own bytes, like `ls`
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        if fmt == "csv":
            (row,) = list(csv.DictReader(fh))
            name = row["source"]
        else:
            name = fh.read().split("\t")[0]
    assert os.fsencode(name) == os.fsencode(str(image))


def test_non_utf8_name_to_stdout_does_not_crash(tmp_path, capfdbinary):
    image = write_image(tmp_path / LATIN1_NAME, "red")
    sink = StreamSink("txt")
    sink.write(ok(src(image)), src(image))
    sink.close()
    assert os.fsencode(str(image)) + b"\ta red image\n" in capfdbinary.readouterr().out


def test_non_utf8_name_gets_its_sidecar_beside_it(tmp_path):
    image = write_image(tmp_path / "photos" / LATIN1_NAME, "red")
    sink = SidecarSink()
    (source,) = list(iter_sources([str(tmp_path / "photos")]))
    sink.write(ok(source), source)
    assert (tmp_path / "photos" / os.fsdecode(b"caf\xe9.txt")).read_text() == "a red image\n"
    assert sink.already_done(source)
    assert sorted(os.listdir(os.fsencode(image.parent))) == [b"caf\xe9.jpg", b"caf\xe9.txt"]


# -- item 2: --output is not destroyed by a run that produces nothing ---------------------


def test_output_file_untouched_until_the_first_result(tmp_path):
    out = tmp_path / "captions.jsonl"
    out.write_text("".join(f'{{"n": {i}}}\n' for i in range(40)))
    sink = StreamSink("jsonl", out)  # the CLI builds this before loading the model
    # ... the model fails to load; the run ends without a result:
    sink.close(complete=False)
    assert len(out.read_text().splitlines()) == 40
    assert leftovers(tmp_path) == []


def test_output_replaced_once_results_exist_and_no_temp_left(tmp_path):
    out = tmp_path / "captions.jsonl"
    out.write_text("old\n" * 40)
    sink = StreamSink("jsonl", out)
    sink.write(ok("a.jpg"), Source(key="a.jpg"))
    assert out.read_text() == "old\n" * 40  # not yet: still being written beside it
    sink.flush()  # a batch is done: from here on the new file is the output
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == ["a.jpg"]
    sink.write(ok("b.jpg"), Source(key="b.jpg"))
    sink.close()
    assert [json.loads(x)["source"] for x in out.read_text().splitlines()] == ["a.jpg", "b.jpg"]
    assert leftovers(tmp_path) == []


def test_a_completed_run_with_no_result_writes_an_empty_file(tmp_path):
    out = tmp_path / "c.csv"
    out.write_text("stale\n")
    StreamSink("csv", out).close()
    assert out.read_text().splitlines() == [",".join(StreamSink.CSV_FIELDS)]


def test_stale_temp_of_a_killed_run_is_swept(tmp_path):
    out = tmp_path / "captions.jsonl"
    dead = tmp_path / ".captions.jsonl.999999999.abcd.tmp"  # a pid that cannot exist
    dead.write_text("half a li")
    sink = StreamSink("jsonl", out)
    sink.write(ok("a.jpg"), Source(key="a.jpg"))
    sink.close()
    assert leftovers(tmp_path) == []


# -- item 3: unwritable outputs stop with one line ----------------------------------------


def _deny_under(monkeypatch, folder: Path) -> None:
    """Make every create under ``folder`` fail like a read-only folder (works as root too)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_sidecar_write_error_is_an_output_error_naming_the_path(tmp_path, monkeypatch):
    image = write_image(tmp_path / "ro" / "red.jpg", "red")
    _deny_under(monkeypatch, tmp_path / "ro")
    sink = SidecarSink()
    with pytest.raises(OutputError) as info:
        sink.write(ok(src(image)), src(image))
    message = str(info.value)
    assert str(tmp_path / "ro" / "red.txt") in message and "--output-dir" in message
    assert "\n" not in message
    assert leftovers(tmp_path) == []


def test_output_dir_under_a_file_is_an_output_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    image = write_image(tmp_path / "red.jpg", "red")
    sink = SidecarSink(output_dir=tmp_path / "afile" / "caps")
    with pytest.raises(OutputError, match="afile"):
        sink.write(ok(src(image)), src(image))
    with pytest.raises(OutputError, match="afile"):
        check_writable([sink], [str(image)])


def test_stream_write_error_is_an_output_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    sink = StreamSink("jsonl", tmp_path / "afile" / "out.jsonl")
    with pytest.raises(OutputError, match=r"afile.*--output"):
        check_writable([sink])
    with pytest.raises(OutputError, match="--output"):
        sink.write(ok("a.jpg"), Source(key="a.jpg"))
        sink.flush()


def test_check_writable_probes_sidecar_folders_before_any_work(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    write_image(photos / "red.jpg", "red")
    good = tmp_path / "good"
    good.mkdir()
    check_writable([SidecarSink(), StreamSink("jsonl", good / "new" / "o.jsonl")], [str(photos)])
    check_writable([SidecarSink(output_dir=tmp_path / "caps" / "deep")], [str(photos)])
    assert not (tmp_path / "caps").exists() and not (good / "new").exists()  # probes only
    assert leftovers(tmp_path) == []
    check_writable([SidecarSink()], ["-", "https://example.org/x.jpg"])  # nothing to probe
    _deny_under(monkeypatch, photos)
    with pytest.raises(OutputError, match=r"photos.*--output-dir"):
        check_writable([SidecarSink()], [str(photos / "red.jpg")])
    check_writable([SidecarSink(output_dir=good)], [str(photos)])  # sidecars go elsewhere


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
def test_read_only_folder_really_refused(tmp_path):
    photos = tmp_path / "photos"
    image = write_image(photos / "red.jpg", "red")
    photos.chmod(0o555)
    try:
        with pytest.raises(OutputError):
            check_writable([SidecarSink()], [str(photos)])
        with pytest.raises(OutputError):
            SidecarSink().write(ok(src(image)), src(image))
    finally:
        photos.chmod(0o755)


# -- item 4: sidecar collisions ------------------------------------------------------------


def test_same_stem_siblings_each_get_their_own_sidecar(tmp_path):
    photos = tmp_path / "photos"
    jpg = write_image(photos / "photo.jpg", "red")
    png = write_image(photos / "photo.png", "blue", fmt="PNG")
    alone = write_image(photos / "alone.jpg", "green")
    sink = SidecarSink()
    for path, text in [(png, "blue"), (jpg, "red"), (alone, "green")]:
        sink.write(ok(src(path), text), src(path))
    assert (photos / "photo.jpg.txt").read_text() == "red\n"
    assert (photos / "photo.png.txt").read_text() == "blue\n"
    assert (photos / "alone.txt").read_text() == "green\n"
    assert not (photos / "photo.txt").exists()
    # The rule depends on the folder, not on the run: a run naming only one file agrees.
    assert SidecarSink().path_for(src(png)) == photos / "photo.png.txt"
    assert SidecarSink().already_done(src(jpg))


def test_sibling_rule_with_output_dir_and_odd_names(tmp_path):
    photos = tmp_path / "photos"
    for name in ["a.jpg", "a.png", "a.jpg.png", "b.json", "b.gif", "c.JPG", "c.jpg"]:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(photos / name, "red", fmt="PNG")
    sink = SidecarSink(output_dir=tmp_path / "caps")
    targets = {
        name: sink.path_for(src(photos / name, photos)).name
        for name in ["a.jpg", "a.png", "a.jpg.png", "b.gif", "c.JPG", "c.jpg"]
    }
    assert targets == {
        "a.jpg": "a.jpg.txt",
        "a.png": "a.png.txt",
        "a.jpg.png": "a.jpg.png.txt",  # its stem 'a.jpg' is another image's sidecar stem
        "b.gif": "b.txt",  # b.json is not an image
        "c.JPG": "c.JPG.txt",
        "c.jpg": "c.jpg.txt",
    }
    assert len(set(targets.values())) == len(targets)


def test_output_dir_with_two_inputs_holding_the_same_name(tmp_path):
    d1 = write_image(tmp_path / "d1" / "img.jpg", "red")
    d2 = write_image(tmp_path / "d2" / "img.jpg", "blue")
    caps = tmp_path / "caps"
    inputs = [str(d1), str(d2)]
    sink = SidecarSink(output_dir=caps, roots=inputs)
    for source in iter_sources(inputs):
        sink.write(ok(source, Path(source.key).parent.name), source)
    assert (caps / "d1" / "img.txt").read_text() == "d1\n"
    assert (caps / "d2" / "img.txt").read_text() == "d2\n"
    # Folders as inputs mirror under their own names too.
    folders = [str(tmp_path / "d1"), str(tmp_path / "d2")]
    sink2 = SidecarSink(output_dir=tmp_path / "caps2", roots=folders)
    assert [sink2.path_for(s) for s in iter_sources(folders)] == [
        tmp_path / "caps2" / "d1" / "img.txt",
        tmp_path / "caps2" / "d2" / "img.txt",
    ]
    # One folder keeps today's layout.
    one = SidecarSink(output_dir=tmp_path / "caps3", roots=[str(tmp_path / "d1")])
    assert [one.path_for(s) for s in iter_sources([str(tmp_path / "d1")])] == [
        tmp_path / "caps3" / "img.txt"
    ]


def test_output_dir_collision_without_roots_is_not_silent(tmp_path):
    """Sources from a stdin list (roots unknown): a second image claiming a taken name gets a
    name of its own, derived from its path, so nothing is dropped."""
    d1 = write_image(tmp_path / "d1" / "img.jpg", "red")
    d2 = write_image(tmp_path / "d2" / "img.jpg", "blue")
    caps = tmp_path / "caps"
    sink = SidecarSink(output_dir=caps)
    for path, text in [(d1, "d1"), (d2, "d2"), (d1, "d1 again")]:
        sink.write(ok(src(path), text), src(path))
    files = sorted(p.name for p in caps.iterdir())
    assert len(files) == 2 and "img.txt" in files
    assert (caps / "img.txt").read_text() == "d1\n"  # skip policy: the first stays
    other = next(f for f in files if f != "img.txt")
    assert other.startswith("img.jpg.") and (caps / other).read_text() == "d2\n"


# -- item 5: append/prepend are idempotent -------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("append", "mine, a red image\n"), ("prepend", "a red image, mine\n")],
)
def test_append_and_prepend_do_not_repeat_on_rerun(tmp_path, policy, expected):
    image = write_image(tmp_path / "red.jpg", "red")
    (tmp_path / "red.txt").write_text("mine\n")
    for _ in range(3):  # a kill -9 after the write, then reruns
        SidecarSink(existing=policy, separator=", ").write(ok(src(image)), src(image))
    assert (tmp_path / "red.txt").read_text() == expected
    # A different caption is still added.
    SidecarSink(existing=policy, separator=", ").write(ok(src(image), "new"), src(image))
    assert (tmp_path / "red.txt").read_text().count("new") == 1


def test_append_does_not_mistake_a_partial_word_for_the_caption(tmp_path):
    image = write_image(tmp_path / "red.jpg", "red")
    (tmp_path / "red.txt").write_text("a scarred image\n")
    SidecarSink(existing="append").write(ok(src(image), "red image"), src(image))
    assert (tmp_path / "red.txt").read_text() == "a scarred image red image\n"


# -- item 6: file modes --------------------------------------------------------------------


def test_new_sidecars_follow_the_umask_and_rewrites_keep_the_mode(tmp_path):
    image = write_image(tmp_path / "red.jpg", "red")
    old = os.umask(0o022)
    try:
        SidecarSink().write(ok(src(image)), src(image))
        assert stat.S_IMODE((tmp_path / "red.txt").stat().st_mode) == 0o644
        os.umask(0o002)
        atomic_write_text(tmp_path / "other.txt", "x\n")
        assert stat.S_IMODE((tmp_path / "other.txt").stat().st_mode) == 0o664
        (tmp_path / "red.txt").chmod(0o640)
        SidecarSink(existing="overwrite").write(ok(src(image), "new"), src(image))
        assert (tmp_path / "red.txt").read_text() == "new\n"
        assert stat.S_IMODE((tmp_path / "red.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_output_file_follows_the_umask_and_keeps_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.jsonl"
        sink = StreamSink("jsonl", out)
        sink.write(ok("a.jpg"), Source(key="a.jpg"))
        sink.close()
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        out.chmod(0o664)
        sink = StreamSink("jsonl", out)
        sink.write(ok("a.jpg"), Source(key="a.jpg"))
        sink.close()
        assert stat.S_IMODE(out.stat().st_mode) == 0o664
    finally:
        os.umask(old)
