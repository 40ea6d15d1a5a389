"""Captions inside image files (issue #21): written by exiftool, read back by exiftool.

Every check reads the files with a real reader (``exiftool -j -G1``, the keys photo managers'
XMP names map to), and the pixels are decoded before and after to prove nothing re-encoded.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from captionkit.engine.metadata import (
    ExiftoolMissingError,
    MetadataSink,
    check_exiftool,
    tag_names,
    write_sidecars,
    writer_of,
)
from captionkit.engine.runner import Runner, RunOptions
from captionkit.errors import CaptionkitError, MissingDependencyError, OutputError
from captionkit.inputs.sources import Source, iter_sources
from captionkit.types import CaptionRequest, CaptionResult
from helpers.fakes import FakeCaptioner, write_image

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="needs exiftool (libimage-exiftool-perl)")

FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tif": "TIFF"}
CAPTION = "a red square on a table, $5 @home"
WRITER = "captionkit 0.1.0 (fake:fake-model)"


def result(path: Path | str, text: str = CAPTION, tags=None) -> CaptionResult:
    extra = {"tags": tags} if tags is not None else {}
    return CaptionResult(
        source=str(path), text=text, backend="fake", model="fake-model", extra=extra
    )


def write(sink: MetadataSink, *paths: Path, text: str = CAPTION, tags=None) -> MetadataSink:
    for p in paths:
        sink.write(result(p, text, tags), Source(key=str(p), path=p))
    sink.close()
    return sink


def read(path: Path) -> dict:
    """exiftool's JSON, group-1 names (``XMP-dc:Description``); any file name bytes."""
    out = subprocess.run(
        [EXIFTOOL, "-j", "-G1", "-a", "-struct", os.fsencode(path)],
        capture_output=True,
        check=True,
    ).stdout
    return json.loads(out.decode("utf-8", "surrogateescape"))[0]


def xmp_packet(path: Path) -> str:
    return subprocess.run(
        [EXIFTOOL, "-b", "-XMP", os.fsencode(path)], capture_output=True, check=True
    ).stdout.decode("utf-8")


IPTC_CORE = "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/"
DC = "http://purl.org/dc/elements/1.1/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def lang_alt(packet: str, namespace: str, name: str) -> dict[str, str]:
    """A language alternative (``rdf:Alt`` of ``rdf:li xml:lang=...``) from an XMP packet."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(packet[packet.index("<x:xmpmeta") : packet.index("</x:xmpmeta>") + 12])
    [prop] = root.iter(f"{{{namespace}}}{name}")
    return {li.get(XML_LANG): li.text for li in prop.iter(f"{{{RDF}}}li")}


def pixels(path: Path) -> tuple:
    with Image.open(path) as im:
        return im.mode, im.size, im.tobytes()


def image(path: Path, fmt: str | None = None) -> Path:
    return write_image(path, "red", size=(40, 30), fmt=fmt)


@pytest.fixture
def unprivileged(tmp_path):
    """``(exiftool, folder)``: as root (root writes anywhere) an exiftool run as 'nobody' and
    a folder it can reach, so that a mode-555 folder really is unwritable to it."""
    if os.geteuid() != 0:
        yield EXIFTOOL, tmp_path
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder unwritable")
    base = Path(tempfile.mkdtemp(prefix="ck-meta-"))
    base.chmod(0o755)
    wrapper = base / "exiftool-as-nobody"
    wrapper.write_text(
        f'#!/bin/sh\nexec {setpriv} --reuid=65534 --regid=65534 --clear-groups {EXIFTOOL} "$@"\n'
    )
    wrapper.chmod(0o755)
    try:
        yield str(wrapper), base
    finally:
        for folder in base.rglob("*"):
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(base)


# -- each format, read back ------------------------------------------------------------------
@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_embed_reads_back_with_exiftool_and_pixels_are_unchanged(tmp_path, ext):
    path = image(tmp_path / f"photo.{ext}", FORMATS[ext])
    before = pixels(path)
    sink = write(MetadataSink("embed"), path, tags=[["red_square", 0.9, "general"], ["table", 0.5]])
    assert sink.written == 1 and not sink.failures
    tags = read(path)
    assert tags["XMP-dc:Description"] == CAPTION
    assert tags["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert tags["XMP-dc:Subject"] == ["red square", "table"]
    assert tags["XMP-photoshop:CaptionWriter"] == WRITER
    packet = xmp_packet(path)  # the exact XMP names photo managers look up
    assert "<Iptc4xmpCore:AltTextAccessibility>" in packet
    assert lang_alt(packet, IPTC_CORE, "AltTextAccessibility") == {"x-default": CAPTION}
    assert lang_alt(packet, DC, "description") == {"x-default": CAPTION}
    assert pixels(path) == before
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no sidecar, no temp


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_xmp_sidecar_reads_back_and_leaves_the_image_byte_identical(tmp_path, ext):
    path = image(tmp_path / f"photo.{ext}", FORMATS[ext])
    data = path.read_bytes()
    sink = write(MetadataSink("xmp"), path)
    sidecar = tmp_path / f"photo.{ext}.xmp"
    assert sink.written == 1
    assert read(sidecar)["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert read(sidecar)["XMP-dc:Description"] == CAPTION
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, sidecar.name])


def test_stem_sidecar_names_follow_lightroom_and_never_collide(tmp_path):
    alone = image(tmp_path / "alone.jpg")
    jpg = image(tmp_path / "pair.jpg")
    png = image(tmp_path / "pair.png", "PNG")
    sink = MetadataSink("xmp", sidecar_name="stem")
    for p, text in ((alone, "one"), (jpg, "two"), (png, "three")):
        sink.write(result(p, text), Source(key=str(p), path=p))
    sink.close()
    assert read(tmp_path / "alone.xmp")["XMP-dc:Description"] == "one"
    assert read(tmp_path / "pair.jpg.xmp")["XMP-dc:Description"] == "two"
    assert read(tmp_path / "pair.png.xmp")["XMP-dc:Description"] == "three"
    assert not (tmp_path / "pair.xmp").exists()


def test_multiline_caption_and_special_characters_survive(tmp_path):
    path = image(tmp_path / "p.jpg")
    text = 'line one: "quoted" $HOME @user \\back\n  line two ends with a backslash\\'
    write(MetadataSink("embed"), path, text=text)
    assert read(path)["XMP-dc:Description"] == text
    assert read(path)["XMP-iptcCore:AltTextAccessibility"] == text


# -- existing metadata -------------------------------------------------------------------------
def test_existing_exif_and_xmp_are_kept(tmp_path):
    path = tmp_path / "camera.jpg"
    im = Image.new("RGB", (40, 30), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 7"  # Model
    im.save(path, exif=exif, quality=90)
    subprocess.run(
        [
            EXIFTOOL,
            "-q",
            "-overwrite_original",
            "-XMP-dc:Creator=Ada",
            "-XMP-dc:Subject=holiday",
            "-XMP-xmp:Rating=4",
            str(path),
        ],
        check=True,
    )
    before = pixels(path)
    write(MetadataSink("embed"), path, tags=["beach", "holiday"])
    tags = read(path)
    assert tags["IFD0:Make"] == "TestCam" and tags["IFD0:Model"] == "Model 7"
    assert tags["XMP-dc:Creator"] == ["Ada"] and tags["XMP-xmp:Rating"] == 4
    assert sorted(tags["XMP-dc:Subject"]) == ["beach", "holiday"]  # the user's kept, no twin
    assert tags["XMP-dc:Description"] == CAPTION
    assert pixels(path) == before


def test_rerun_is_idempotent_and_replaces_its_own_caption(tmp_path):
    path = image(tmp_path / "p.png", "PNG")
    write(MetadataSink("embed"), path, text="first", tags=["a", "b"])
    write(MetadataSink("embed"), path, text="second", tags=["b", "c"])
    tags = read(path)
    assert tags["XMP-dc:Description"] == "second"
    assert sorted(tags["XMP-dc:Subject"]) == ["a", "b", "c"]  # added, never duplicated


@pytest.mark.parametrize("mode", ["embed", "xmp"])
def test_a_description_captionkit_did_not_write_is_kept(tmp_path, mode):
    path = image(tmp_path / "p.jpg")
    target = path if mode == "embed" else tmp_path / "p.jpg.xmp"
    subprocess.run(
        [
            EXIFTOOL,
            "-q",
            "-overwrite_original",
            "-XMP-dc:Description=My own words",
            "-XMP-photoshop:CaptionWriter=Ada",
            str(target),
        ],
        check=True,
    )
    sink = write(MetadataSink(mode), path)
    assert sink.kept == 1 and sink.written == 0
    assert read(target)["XMP-dc:Description"] == "My own words"
    assert any("kept their own description" in line for line in sink.report())
    sink = write(MetadataSink(mode, replace_foreign=True), path)
    assert sink.written == 1
    assert read(target)["XMP-dc:Description"] == CAPTION


# -- file names --------------------------------------------------------------------------------
ODD_NAMES = [
    "-starts-with-dash.jpg",
    "space and é ü 日本.jpg",
    os.fsdecode(b"latin1-caf\xe9.jpg"),  # not UTF-8: a lone surrogate in Python
    "line\nbreak.jpg",
    "dollar $HOME @at.jpg",
    'quote\'s "double".jpg',
]


@pytest.mark.parametrize("mode", ["embed", "xmp"])
def test_odd_file_names(tmp_path, mode):
    paths = [image(tmp_path / name, "JPEG") for name in ODD_NAMES]
    sink = write(MetadataSink(mode), *paths)
    assert sink.written == len(paths), sink.failures
    for p in paths:
        target = p if mode == "embed" else p.with_name(p.name + ".xmp")
        assert read(target)["XMP-dc:Description"] == CAPTION, p


def test_a_name_exiftool_cannot_be_given_fails_alone(tmp_path):
    bad = image(tmp_path / "line\nbreak $and @.jpg")
    good = image(tmp_path / "good.jpg")
    sink = write(MetadataSink("embed"), bad, good)
    assert sink.written == 1 and read(good)["XMP-dc:Description"] == CAPTION
    assert len(sink.failures) == 1 and "rename it" in sink.failures[0][1]


# -- formats that cannot hold XMP, broken files --------------------------------------------------
@pytest.mark.parametrize("ext,fmt", [("gif", "GIF"), ("bmp", "BMP")])
def test_embed_falls_back_to_a_sidecar_for_formats_without_xmp(tmp_path, ext, fmt):
    path = image(tmp_path / f"p.{ext}", fmt)
    data = path.read_bytes()
    sink = write(MetadataSink("embed"), path)
    assert path.read_bytes() == data
    assert read(tmp_path / f"p.{ext}.xmp")["XMP-dc:Description"] == CAPTION
    assert sink.fallbacks == {ext.upper(): 1}
    assert f"metadata: 1 {ext.upper()} images cannot hold XMP: written as .xmp sidecars" in (
        sink.report()
    )


def test_a_file_exiftool_cannot_parse_fails_alone_and_stays_intact(tmp_path):
    good = image(tmp_path / "good.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(image(tmp_path / "src.jpg").read_bytes()[:300])  # truncated JPEG
    (tmp_path / "src.jpg").unlink()
    data = broken.read_bytes()
    sink = write(MetadataSink("embed"), broken, good)
    assert broken.read_bytes() == data
    assert read(good)["XMP-dc:Description"] == CAPTION
    assert sink.written == 1
    [(source, why)] = sink.failures
    assert source == str(broken) and why.startswith("metadata not written: ")
    assert "\n" not in why
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg", "good.jpg"]  # no temp


def test_embedding_replaces_the_file_by_rename_not_in_place(tmp_path):
    """exiftool writes a temporary file and renames it: the old inode is never half-written."""
    path = image(tmp_path / "p.jpg")
    os.chmod(path, 0o640)
    before = os.stat(path)
    write(MetadataSink("embed"), path)
    after = os.stat(path)
    assert after.st_ino != before.st_ino
    assert stat.S_IMODE(after.st_mode) == 0o640


def test_failures_urls_and_video_frames_write_nothing(tmp_path):
    path = image(tmp_path / "p.jpg")
    data = path.read_bytes()
    sink = MetadataSink("embed")
    bad = CaptionResult(source=str(path), text=None, error="cannot decode")
    sink.write(bad, Source(key=str(path), path=path))
    sink.write(result("u"), Source(key="https://x/y.jpg", url="https://x/y.jpg"))
    frame = Source(key="clip.mp4#t=1.000", path=path, meta={"video": "clip.mp4", "t": 1.0})
    sink.write(result(path), frame)
    sink.close()
    assert path.read_bytes() == data and sink.written == 0 and sink.skipped == 2


# -- mtime -------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [True, False])
def test_keep_mtime(tmp_path, keep):
    path = image(tmp_path / "p.jpg")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    write(MetadataSink("embed", keep_mtime=keep), path)
    assert (os.stat(path).st_mtime == 1_000_000_000) is keep


# -- unwritable places ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["embed", "xmp"])
def test_unwritable_folder_stops_in_one_line_and_leaves_the_image(unprivileged, mode):
    exe, base = unprivileged
    photos = base / "photos"
    path = image(photos / "p.jpg")
    os.chmod(path, 0o666)  # the file itself is writable: only the folder is not
    data = path.read_bytes()
    photos.chmod(0o555)
    try:
        sink = MetadataSink(mode, exiftool=exe)
        sink.write(result(path), Source(key=str(path), path=path))
        with pytest.raises(OutputError) as err:
            sink.close()
        message = str(err.value)
        assert "\n" not in message and str(photos) in message
        assert "results store" in message
        assert path.read_bytes() == data
        assert sorted(p.name for p in photos.iterdir()) == ["p.jpg"]
    finally:
        photos.chmod(0o755)


def test_check_refuses_an_unwritable_input_folder_before_any_work(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    image(photos / "p.jpg")

    def refuse(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr("captionkit.engine.metadata.probe_folder", refuse)
    with pytest.raises(OutputError, match=r"cannot write metadata in .*photos: Permission denied"):
        MetadataSink("embed").check([str(photos)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write read-only files")
def test_read_only_image_in_embed_mode_stops_with_the_fix(tmp_path):
    path = image(tmp_path / "p.jpg")
    path.chmod(0o444)
    sink = MetadataSink("embed")
    with pytest.raises(OutputError, match=r"read-only.*--metadata xmp"):
        sink.write(result(path), Source(key=str(path), path=path))
    sink.close()


def test_read_only_image_is_refused_even_for_root(tmp_path, monkeypatch):
    """exiftool renames over a read-only file (the folder allows it); we do not."""
    path = image(tmp_path / "p.jpg")
    data = path.read_bytes()
    real = os.access
    monkeypatch.setattr(
        "captionkit.engine.metadata.os.access",
        lambda p, mode: False if Path(p) == path and mode == os.W_OK else real(p, mode),
    )
    other = image(tmp_path / "other.jpg")
    sink = MetadataSink("embed")
    sink.write(result(other), Source(key=str(other), path=other))
    with pytest.raises(OutputError, match="read-only; make it writable"):
        sink.write(result(path), Source(key=str(path), path=path))
    sink.close()
    assert path.read_bytes() == data
    assert read(other)["XMP-dc:Description"] == CAPTION  # the batch before it was written


# -- exiftool missing or too old -----------------------------------------------------------------
def test_missing_exiftool_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sink = MetadataSink("embed")
    with pytest.raises(ExiftoolMissingError) as err:
        sink.check([str(tmp_path)])
    assert isinstance(err.value, MissingDependencyError)
    assert isinstance(err.value, CaptionkitError) and err.value.exit_code == 2
    message = str(err.value)
    assert "\n" not in message and "libimage-exiftool-perl" in message


def test_too_old_exiftool_is_refused(tmp_path):
    fake = tmp_path / "exiftool"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-ver" ]; then echo 10.80; else echo "Title"; fi\n')
    fake.chmod(0o755)
    with pytest.raises(ExiftoolMissingError, match=r"exiftool 10\.80 .* too old"):
        check_exiftool(str(fake))


def test_check_exiftool_reports_the_version():
    exe, version = check_exiftool()
    assert Path(exe).name == "exiftool" and float(version) >= 12


def test_unknown_mode_and_name_are_config_errors():
    with pytest.raises(CaptionkitError, match="--metadata must be one of xmp, embed"):
        MetadataSink("exif")
    with pytest.raises(CaptionkitError, match="--xmp-name must be one of full, stem"):
        MetadataSink("xmp", sidecar_name="lightroom")


# -- helpers -----------------------------------------------------------------------------------
def test_tag_names_from_tagger_and_plain_lists():
    r = CaptionResult(
        source="x",
        text="t",
        extra={
            "tags": [
                ["long_hair", 0.9, "general"],
                ["1girl", 0.8, "general"],
                ["long_hair", 0.5, "general"],
            ]
        },
    )
    assert tag_names(r) == ["long hair", "1girl"]
    assert tag_names(CaptionResult(source="x", text="t", extra={"tags": ["a b", "", "c"]})) == [
        "a b",
        "c",
    ]
    assert tag_names(CaptionResult(source="x", text="t")) == []


def test_writer_names_backend_and_model():
    assert writer_of(result("x")) == WRITER
    assert writer_of(CaptionResult(source="x", text="t")) == "captionkit 0.1.0"
    grounded = CaptionResult(
        source="x", text="t", backend="grounded", model="grounded:ssd+template"
    )
    assert writer_of(grounded).endswith("(grounded:ssd+template)")  # the backend named once


# -- through the engine, and speed -----------------------------------------------------------------
def test_engine_run_embeds_every_image_once_per_batch(tmp_path):
    photos = tmp_path / "photos"
    colours = ["red", "green", "blue", "white", "black"]
    for i, colour in enumerate(colours):
        write_image(photos / f"{i}_{colour}.jpg", colour, size=(16 + i, 16))
    sink = MetadataSink("embed")
    sink.check([str(photos)])
    fake = FakeCaptioner()
    runner = Runner(
        fake, CaptionRequest(), sinks=[sink], options=RunOptions(batch_size=2, workers=1)
    )
    summary = runner.run(iter_sources([str(photos)]))
    assert summary.captioned == 5 and sink.written == 5
    for i, colour in enumerate(colours):
        tags = read(photos / f"{i}_{colour}.jpg")
        assert tags["XMP-dc:Description"] == f"a {colour} image"
        assert tags["XMP-photoshop:CaptionWriter"] == WRITER
    assert sink._tools == []  # the exiftool processes were stopped by close()


def test_one_exiftool_process_serves_many_flushes(tmp_path):
    paths = [image(tmp_path / f"{i}.png", "PNG") for i in range(6)]
    sink = MetadataSink("embed", processes=1)
    for i, p in enumerate(paths):
        sink.write(result(p, f"caption {i}"), Source(key=str(p), path=p))
        if i % 2:
            sink.flush()
    [tool] = sink._tools
    pid = tool.pid
    assert pid is not None
    sink.write(result(paths[0], "again"), Source(key=str(paths[0]), path=paths[0]))
    sink.flush()
    assert sink._tools[0].pid == pid
    sink.close()
    assert [read(p)["XMP-dc:Description"] for p in paths] == [
        "again",
        *[f"caption {i}" for i in range(1, 6)],
    ]


def test_write_sidecars_for_stored_results(tmp_path):
    a = image(tmp_path / "a.jpg")
    gone = tmp_path / "gone.jpg"
    results = [
        CaptionResult(source="a", text="stored", backend="hf", model="org/m", path=str(a)),
        CaptionResult(source="g", text="lost", path=str(gone)),
        CaptionResult(source="https://x/u.jpg", text="url"),
    ]
    sink = write_sidecars(results)
    assert sink.written == 1 and sink.skipped == 2
    tags = read(tmp_path / "a.jpg.xmp")
    assert tags["XMP-dc:Description"] == "stored"
    assert tags["XMP-photoshop:CaptionWriter"] == "captionkit 0.1.0 (hf:org/m)"


@pytest.mark.parametrize("mode", ["embed", "xmp"])
def test_the_same_image_twice_in_one_batch_keeps_the_last_caption(tmp_path, mode):
    path = image(tmp_path / "p.jpg")
    sink = MetadataSink(mode)
    for text in ("first", "second"):
        sink.write(result(path, text), Source(key=str(path), path=path))
    sink.close()
    target = path if mode == "embed" else tmp_path / "p.jpg.xmp"
    assert sink.written == 2 and not sink.failures
    assert read(target)["XMP-dc:Description"] == "second"


def test_a_foreign_description_is_kept_under_a_non_utf8_name(tmp_path):
    path = image(tmp_path / os.fsdecode(b"caf\xe9.jpg"))
    subprocess.run(
        [EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Description=Mine", os.fsencode(path)],
        check=True,
    )
    sink = write(MetadataSink("embed"), path)
    assert sink.kept == 1 and read(path)["XMP-dc:Description"] == "Mine"


def test_several_exiftool_processes_share_a_batch(tmp_path):
    paths = [image(tmp_path / f"{i}.jpg") for i in range(7)]
    own = paths[3]
    subprocess.run(
        [EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Description=Mine", str(own)], check=True
    )
    sink = MetadataSink("embed", processes=3)
    for i, p in enumerate(paths):
        sink.write(result(p, f"caption {i}"), Source(key=str(p), path=p))
    sink.flush()
    assert len({t.pid for t in sink._tools}) == 3
    sink.close()
    assert sink.written == 6 and sink.kept == 1
    for i, p in enumerate(paths):
        assert read(p)["XMP-dc:Description"] == ("Mine" if p == own else f"caption {i}")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_kill_9_leaves_no_exiftool_behind(tmp_path):
    """exiftool -stay_open polls its input for ever once captionkit is gone; it must die too."""
    path = image(tmp_path / "p.jpg")
    script = f"""
import os, signal
from pathlib import Path
from captionkit.engine.metadata import MetadataSink
from captionkit.inputs.sources import Source
from captionkit.types import CaptionResult
sink = MetadataSink("embed", processes=2)
p = Path({str(path)!r})
sink.write(CaptionResult(source="p", text="x"), Source(key="p", path=p))
sink.flush()
print(" ".join(str(t.pid) for t in sink._tools), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as fh:  # a zombie (not reaped yet) is gone too
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("mode", ["embed", "xmp"])
def test_a_killed_runs_exiftool_temp_file_does_not_block_the_rerun(tmp_path, mode):
    path = image(tmp_path / "p.jpg")
    target = path if mode == "embed" else tmp_path / "p.jpg.xmp"
    if mode == "xmp":
        write(MetadataSink("xmp"), path, text="before")
    leftover = target.with_name(target.name + "_exiftool_tmp")
    leftover.write_bytes(b"half a file")  # exiftool was killed before its rename
    sink = write(MetadataSink(mode), path)
    assert sink.written == 1 and not sink.failures
    assert read(target)["XMP-dc:Description"] == CAPTION
    assert not leftover.exists()
