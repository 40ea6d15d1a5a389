"""The `captionkit` command when things go wrong (issue #11): odd file names, failed runs,
unwritable outputs, colliding sidecars, reruns, a damaged store. The fake backend (registered
in the child process) keeps every run well under a second."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.fakes import caption_for, write_image

TESTS = Path(__file__).resolve().parents[1]
LAUNCH = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
    "from helpers.fakes import FakeCaptioner; from captionkit.captioners import registry; "
    "registry.register(FakeCaptioner); from captionkit.cli.main import run; run()"
)
LATIN1 = os.fsdecode(b"caf\xe9.png")


def ck(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI with the fake backend registered; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *map(str, args)],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        cwd=cwd,
        timeout=120,
    )


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def caption(photos: Path, store: Path, *extra: str | Path) -> subprocess.CompletedProcess:
    return ck("caption", photos, "--model", "fake", "--store", store, "--no-progress", *extra)


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i, colour in enumerate(["red", "green", "blue", "white", "black", "yellow"]):
        write_image(root / "sub" / f"{i}.png", colour, size=(10 + i, 10))
    return root


def test_non_utf8_file_name_is_captioned_and_round_trips(photos, tmp_path):
    write_image(photos / LATIN1, "red", size=(30, 30))
    out = tmp_path / "c.jsonl"
    for store in ("none", tmp_path / "s.sqlite", tmp_path / "s.sqlite"):  # + a cached rerun
        proc = caption(photos, store, "--format", "jsonl", "--output", out)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        (row,) = [r for r in rows if r["source"].endswith(".png") and "caf" in r["source"]]
        assert os.fsencode(row["source"]) == os.fsencode(str(photos / LATIN1))
        assert len(rows) == 7
    assert row["cached"] is True
    assert (photos / os.fsdecode(b"caf\xe9.txt")).read_text() == caption_for("red") + "\n"
    csv_out = tmp_path / "c.csv"
    proc = caption(photos, tmp_path / "s.sqlite", "--format", "csv", "--output", csv_out)
    assert proc.returncode == 0, proc.stderr
    assert os.fsencode(str(photos / LATIN1)) in csv_out.read_bytes()
    exported = ck("results", "export", "--store", tmp_path / "s.sqlite")
    assert exported.returncode == 0, exported.stderr
    sources = [json.loads(line)["source"] for line in exported.stdout.splitlines()]
    assert os.fsencode(str(photos / LATIN1)) in {os.fsencode(s) for s in sources}


def test_failed_run_keeps_the_previous_output_file(photos, tmp_path):
    out = tmp_path / "captions.jsonl"
    proc = caption(photos, tmp_path / "s.sqlite", "--format", "jsonl", "--output", out)
    assert proc.returncode == 0 and len(out.read_text().splitlines()) == 6
    before = out.read_bytes()
    # A typo found only when the model is built (after the outputs were set up).
    typo = ck(
        "caption", photos, "--model", "fake", "-o", "variantt=v2", "--format", "jsonl",
        "--output", out, "--store", tmp_path / "s.sqlite",
    )  # fmt: skip
    one_line(typo, "variantt")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_output_dir_under_a_file_is_one_line(photos, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = caption(photos, tmp_path / "s.sqlite", "--output-dir", tmp_path / "afile" / "caps")
    one_line(proc, str(tmp_path / "afile"), "--output-dir")


def test_sidecar_failing_mid_run_is_one_line_and_the_store_keeps_the_batches(photos, tmp_path):
    """A sidecar that cannot be written deep in the tree (here its name is taken by a folder,
    which stops root too) is found only when written: exit 2, one line naming it, and every
    batch captioned so far is in the store, so the fixed rerun computes nothing again."""
    (photos / "sub" / "3.txt").mkdir()
    store = tmp_path / "s.sqlite"
    proc = caption(photos, store, "--existing", "overwrite", "-b", "2")
    one_line(proc, str(photos / "sub" / "3.txt"), "--output-dir")
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4
    (photos / "sub" / "3.txt").rmdir()
    again = caption(photos, store, "--existing", "overwrite", "-b", "2")
    assert again.returncode == 0, again.stderr
    assert "2 captioned, 4 from the store" in again.stderr
    assert len(list((photos / "sub").glob("*.txt"))) == 6


def test_output_file_in_an_impossible_place_is_one_line(photos, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = caption(photos, "none", "--format", "jsonl", "--output", tmp_path / "afile" / "o.jsonl")
    one_line(proc, str(tmp_path / "afile" / "o.jsonl"), "--output")


def test_same_stem_images_keep_both_captions(tmp_path):
    photos = tmp_path / "photos"
    write_image(photos / "photo.jpg", "red")
    write_image(photos / "photo.png", "blue")
    proc = caption(photos, "none")
    assert proc.returncode == 0, proc.stderr
    assert (photos / "photo.jpg.txt").read_text() == caption_for("red") + "\n"
    assert (photos / "photo.png.txt").read_text() == caption_for("blue") + "\n"
    again = caption(photos, "none")
    assert "2 skipped" in again.stderr


def test_two_inputs_with_the_same_file_name_under_output_dir(tmp_path):
    a = write_image(tmp_path / "d1" / "img.jpg", "red")
    b = write_image(tmp_path / "d2" / "img.jpg", "blue")
    caps = tmp_path / "caps"
    proc = ck("caption", a, b, "--model", "fake", "--store", "none", "--output-dir", caps)
    assert proc.returncode == 0, proc.stderr
    texts = sorted(p.read_text() for p in caps.rglob("*.txt"))
    assert texts == sorted([caption_for("red") + "\n", caption_for("blue") + "\n"])


def test_append_rerun_adds_the_caption_once(photos, tmp_path):
    side = photos / "sub" / "0.txt"
    side.write_text("mine\n")
    for _ in range(2):
        proc = caption(photos, tmp_path / "s.sqlite", "--existing", "append")
        assert proc.returncode == 0, proc.stderr
    assert side.read_text() == f"mine {caption_for('red')}\n"


def test_damaged_store_is_one_line_everywhere(photos, tmp_path):
    from captionkit.engine.store import ResultStore
    from captionkit.types import CaptionResult

    store = tmp_path / "s.sqlite"
    db = ResultStore(store)
    db.put_many([(f"k{i}", CaptionResult(f"{i}.jpg", "x" * 300, sha256="s")) for i in range(200)])
    db.close()
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert store.stat().st_size > 4096 * 6
    with open(store, "r+b") as fh:
        fh.seek(4096 * 2)
        fh.write(os.urandom(4096 * 3))
    for args in (
        ("caption", photos, "--model", "fake", "--store", store),
        ("caption", photos, "--model", "fake", "--store", store, "--force"),
        ("results", "info", "--store", store),
        ("results", "export", "--store", store),
    ):
        err = one_line(ck(*args), str(store), "mv ")
        assert "preprocessing failed" not in err
    assert not list(photos.rglob("*.txt"))  # no image was blamed, nothing half-done
    notdb = tmp_path / "notes.txt"
    notdb.write_text("hello\n" * 300)
    one_line(ck("results", "info", "--store", notdb), "not a captionkit results store")
    one_line(caption(photos, notdb), "not a captionkit results store")
