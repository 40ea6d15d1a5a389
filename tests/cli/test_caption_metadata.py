"""``captionkit caption --metadata xmp|embed``: the flags reach the metadata sink, a real
reader (exiftool) sees the caption, and mistakes are one line before the model loads."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers.cli import run_cli
from helpers.fakes import FakeCaptioner, registered
from helpers.images import write_image

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")


def _caption(capsys, *args: str) -> tuple[int, str]:
    """``captionkit caption ARGS`` with the fake backend: (exit code, stderr)."""
    with registered():
        code, _, err = run_cli(capsys, "caption", *args)
    return code, err


def _read(path) -> dict:
    out = subprocess.run(
        [
            "exiftool",
            "-j",
            "-XMP-dc:Description",
            "-XMP-iptcCore:AltTextAccessibility",
            "-XMP-photoshop:CaptionWriter",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)[0]


def test_embed_writes_the_caption_a_photo_manager_reads(tmp_path, monkeypatch, capsys):
    img = write_image(tmp_path / "red.jpg", fmt="JPEG")
    store = str(tmp_path / "s.sqlite")
    code, err = _caption(
        capsys,
        str(img),
        "--model",
        "fake",
        "--store",
        store,
        "--metadata",
        "embed",
        "--no-progress",
    )
    assert code == 0, err
    tags = _read(img)
    caption = (tmp_path / "red.txt").read_text().strip()
    assert tags["Description"] == caption == tags["AltTextAccessibility"]
    assert tags["CaptionWriter"].startswith("captionkit ") and "fake" in tags["CaptionWriter"]
    assert "metadata: 1 images written" in err


def test_xmp_sidecar_leaves_the_image_untouched(tmp_path, monkeypatch, capsys):
    img = write_image(tmp_path / "a.png", fmt="PNG")
    before = img.read_bytes()
    code, err = _caption(
        capsys,
        str(img),
        "--model",
        "fake",
        "--store",
        "none",
        "--metadata",
        "xmp",
        "--xmp-name",
        "stem",
        "--no-sidecar",
        "--format",
        "jsonl",
        "--output",
        str(tmp_path / "rows.jsonl"),
        "--no-progress",
    )
    assert code == 0, err
    assert img.read_bytes() == before
    assert _read(tmp_path / "a.xmp")["Description"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--metadata", "json"], "--metadata"),
        (["--keep-mtime"], "--keep-mtime needs --metadata embed"),
        (["--metadata", "embed", "--xmp-name", "stem"], "--xmp-name"),
        (["--metadata", "xmp", "--ray", "local"], "--metadata"),
    ],
)
def test_metadata_flag_mistakes_are_one_line_before_the_model_loads(
    tmp_path, monkeypatch, capsys, extra, fragment
):
    img = write_image(tmp_path / "a.jpg", fmt="JPEG")
    code, err = _caption(
        capsys,
        str(img),
        "--model",
        "fake",
        "--store",
        "none",
        "--no-progress",
        *extra,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err and "Traceback" not in err
    assert not FakeCaptioner.instances


def test_missing_exiftool_is_one_line_and_nothing_is_captioned(tmp_path, monkeypatch, capsys):
    img = write_image(tmp_path / "a.jpg", fmt="JPEG")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, err = _caption(
        capsys,
        str(img),
        "--model",
        "fake",
        "--store",
        "none",
        "--no-progress",
        "--metadata",
        "embed",
    )
    assert code == 2 and "exiftool" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a.txt").exists()
