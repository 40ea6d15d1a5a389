"""``captionkit results export --format xmp``: sidecars for everything in the results store,
read back by exiftool."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from captionkit.cli.main import run
from captionkit.engine.store import ResultStore
from captionkit.types import CaptionResult
from helpers.fakes import write_image

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="needs exiftool (libimage-exiftool-perl)")


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``captionkit ARGS`` as the console script does: (exit code, stderr)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exc:
        mp.setattr(sys, "argv", ["captionkit", *args])
        run()
    return exc.value.code, capsys.readouterr().err  # type: ignore[return-value]


def read(path: Path) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-G1", str(path)], capture_output=True, check=True)
    return json.loads(out.stdout)[0]


def stored(path: Path, text: str, *, model: str = "m", tags=None, sha: str = "") -> CaptionResult:
    return CaptionResult(
        source=str(path),
        text=text,
        backend="fake",
        model=model,
        style="short",
        sha256=sha or f"{abs(hash((str(path), model))):064x}"[:64],
        path=str(path),
        extra={"tags": tags} if tags else {},
    )


@pytest.fixture
def store(tmp_path) -> tuple[Path, Path]:
    photos = tmp_path / "photos"
    red = write_image(photos / "red.jpg", "red")
    blue = write_image(photos / "sub" / "blue.png", "blue")
    gone = photos / "gone.jpg"
    db_path = tmp_path / "s.sqlite"
    db = ResultStore(db_path)
    db.put_many(
        [
            ("k1", stored(red, "a red image", tags=[["red", 0.9, "general"]])),
            ("k2", stored(blue, "a blue image")),
            ("k3", stored(gone, "a vanished image")),
        ]
    )
    db.put_many([("k4", stored(red, "a newer red caption", model="m2"))])  # later: it wins
    db.close()
    return db_path, photos


def test_export_xmp_writes_a_sidecar_beside_every_stored_image(capsys, store):
    db_path, photos = store
    red_bytes = (photos / "red.jpg").read_bytes()
    code, err = cli(capsys, "results", "export", "--format", "xmp", "--store", str(db_path))
    assert code == 0, err
    red = read(photos / "red.jpg.xmp")
    assert red["XMP-dc:Description"] == "a newer red caption"
    assert red["XMP-iptcCore:AltTextAccessibility"] == "a newer red caption"
    assert red["XMP-dc:Subject"] == "red"  # the first result's tags stay as keywords
    assert red["XMP-photoshop:CaptionWriter"] == "captionkit 0.1.0 (fake:m2)"
    assert read(photos / "sub" / "blue.png.xmp")["XMP-dc:Description"] == "a blue image"
    assert (photos / "red.jpg").read_bytes() == red_bytes  # sidecars never touch the image
    assert "3 XMP sidecars written" in err  # red twice (two models), blue once
    assert "metadata: 1 results have no image file" in err
    # idempotent: a second export leaves the same sidecars
    code, err = cli(capsys, "results", "export", "--format", "xmp", "--store", str(db_path))
    assert code == 0, err
    assert read(photos / "red.jpg.xmp")["XMP-dc:Subject"] == "red"


def test_export_xmp_filters_by_model_and_names_by_stem(capsys, store):
    db_path, photos = store
    code, err = cli(
        capsys, "results", "export", "--format", "xmp", "--store", str(db_path),
        "--model", "m", "--xmp-name", "stem",
    )  # fmt: skip
    assert code == 0, err
    assert read(photos / "red.xmp")["XMP-dc:Description"] == "a red image"
    assert not (photos / "red.jpg.xmp").exists()


def test_export_xmp_refuses_output_in_one_line(capsys, store, tmp_path):
    db_path, _ = store
    code, err = cli(
        capsys, "results", "export", "--format", "xmp", "--store", str(db_path),
        "--output", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "beside its image" in err and "leave out --output" in err


def test_export_xmp_without_exiftool_is_one_line(capsys, store, tmp_path, monkeypatch):
    db_path, photos = store
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, err = cli(capsys, "results", "export", "--format", "xmp", "--store", str(db_path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "exiftool" in err and "libimage-exiftool-perl" in err and "Traceback" not in err
    assert not list(photos.rglob("*.xmp"))


def test_unknown_export_format_names_xmp(capsys, store):
    db_path, _ = store
    code, err = cli(capsys, "results", "export", "--format", "exif", "--store", str(db_path))
    assert code == 2 and "jsonl, csv, xmp, parquet" in err
